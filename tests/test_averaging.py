"""Checkpoint averaging at the end of training (§6.1, training/averaging.py): the mean of the last snapshots
replaces the final weights only when its validation BLEU is higher, and is exactly the mean of those weights."""

import json
from pathlib import Path

import pytest
import torch

from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training import trainer as trainer_module
from vanilla_transformer.training.averaging import SNAPSHOTS_FILE, WeightSnapshots, snapshot_interval
from vanilla_transformer.training.arguments import TrainArguments
from vanilla_transformer.training.checkpoints import average_checkpoints, list_checkpoints, read_state
from vanilla_transformer.training.trainer import train
from support.training import tiny_args, weights, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def averaged_run(corpus, output_dir, monkeypatch, averaged_bleu):
    """8 updates, evaluated and saved every 2, snapshots every 2, the last 3 averaged; the validation of the average
    (the fifth evaluation) reports `averaged_bleu(final weights' BLEU)` so that both outcomes can be tested."""
    real = trainer_module.evaluate
    scores = []

    def evaluate(*args, **kwargs):
        result = real(*args, **kwargs)
        if len(scores) == 4:
            result = {**result, "bleu": averaged_bleu(scores[-1])}
        scores.append(result["bleu"])
        return result

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    return train(*parse_args(tiny_args(corpus, output_dir, "--max_steps", "8", "--eval_steps", "2", "--save_steps",
                                       "2", "--keep_last", "0", "--average_last", "3", "--average_every", "2")))


def test_a_better_average_becomes_the_final_model_and_best(corpus, tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    summary = averaged_run(corpus, output_dir, monkeypatch, lambda final: final + 50)
    averaging = summary["averaging"]
    assert averaging["snapshot_steps"] == [4, 6, 8] and averaging["kept"] is True
    assert averaging["validation"]["bleu"] == averaging["final_validation_bleu"] + 50
    assert summary["best_validation_bleu"] == averaging["validation"]["bleu"] and summary["best_step"] == 8
    expected = average_checkpoints([output_dir / f"checkpoint-{step}" for step in (4, 6, 8)])
    final = weights(output_dir / "final")
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final)
    assert not torch.equal(final["model.shared.weight"], weights(output_dir / "checkpoint-8")["model.shared.weight"])
    best = weights(output_dir / "best")
    assert all(torch.equal(best[k], final[k]) for k in final)
    assert json.loads((output_dir / "best" / "run_summary.json").read_text())["averaged_steps"] == [4, 6, 8]
    assert json.loads((output_dir / "final" / "run_summary.json").read_text())["averaging"]["kept"] is True


def test_a_worse_average_leaves_the_final_weights(corpus, tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    summary = averaged_run(corpus, output_dir, monkeypatch, lambda final: final - 1)
    assert summary["averaging"]["kept"] is False
    final, last = weights(output_dir / "final"), weights(output_dir / "checkpoint-8")
    assert all(torch.equal(final[k], last[k]) for k in final)
    best_step = summary["best_step"]
    best = weights(output_dir / "best")
    assert all(torch.equal(best[k], t) for k, t in weights(output_dir / f"checkpoint-{best_step}").items())


def test_checkpoints_carry_the_snapshots_taken_so_far(corpus, tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    averaged_run(corpus, output_dir, monkeypatch, lambda final: final)
    checkpoint = list_checkpoints(output_dir)[1]  # checkpoint-4: snapshots of steps 2 and 4 (a window of 3, not full)
    assert SNAPSHOTS_FILE in read_state(checkpoint)["files"]
    snapshots = WeightSnapshots(3, 2)
    snapshots.load(checkpoint)
    assert snapshots.steps == [2, 4]
    for step in (2, 4):
        saved = weights(output_dir / f"checkpoint-{step}")
        assert all(torch.equal(snapshots.snapshots[step][k], saved[k]) for k in saved)


def test_the_snapshots_span_the_last_evaluation_interval_by_default():
    assert snapshot_interval(TrainArguments(eval_steps=550, average_last=5)) == 110
    assert snapshot_interval(TrainArguments(eval_steps=550, average_last=5, average_every=7)) == 7
    assert snapshot_interval(TrainArguments(eval_steps=3, average_last=5)) == 1


def test_equal_scores_keep_the_final_weights_and_no_averaging_writes_nothing(corpus, tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    summary = averaged_run(corpus, output_dir, monkeypatch, lambda final: final)
    assert summary["averaging"]["kept"] is False
    plain = train(*parse_args(tiny_args(corpus, tmp_path / "plain", "--max_steps", "2", "--eval_steps", "2",
                                        "--save_steps", "2")))
    assert plain["averaging"] is None
    assert SNAPSHOTS_FILE not in read_state(tmp_path / "plain" / "checkpoint-2")["files"]
