"""Mixed precision on CPU, through Accelerate: bf16 autocast trains like float32, keeps float32 master weights in
its checkpoints, resumes bit for bit, and exports float32 unless `--export_dtype bfloat16` asks otherwise; fp16,
which Accelerate cannot do on CPU, is refused before any work.

Each run sets Accelerate's process-wide state afresh (a precision cannot change inside one `AcceleratorState`).
"""

import json
import shutil

import pytest
import torch

from support.training import tiny_args, weights, write_corpus
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training.distributed import forget_accelerate_state
from vanilla_transformer.training.train import train

RUN = ["--max_steps", "50", "--save_steps", "25", "--eval_steps", "25", "--keep_last", "0", "--logging_steps", "1",
       "--report_to", "tensorboard", "--eval_samples", "4", "--dropout", "0.1"]


def fresh_run(*args: str) -> dict:
    forget_accelerate_state()
    try:
        return train(*parse_args(list(args)))
    finally:
        forget_accelerate_state()


def losses(output_dir) -> list[float]:
    """train/loss of every update (logging_steps 1), from TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(output_dir / "runs" / "train"))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars("train/loss")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """50 updates in float32 and in bf16 from the same seed; then the bf16 run resumed from its checkpoint-25 in
    a copy of its output folder (as after a crash there), exporting bfloat16."""
    root = tmp_path_factory.mktemp("precision")
    corpus = write_corpus(root / "corpus")
    fp32 = fresh_run(*tiny_args(corpus, root / "fp32", *RUN, "--mixed_precision", "no"))
    bf16 = fresh_run(*tiny_args(corpus, root / "bf16", *RUN, "--mixed_precision", "bf16"))
    resumed = root / "bf16_resumed"
    resumed.mkdir()
    for name in ("tokenizer", "checkpoint-25"):
        shutil.copytree(root / "bf16" / name, resumed / name)
    again = fresh_run(*tiny_args(corpus, resumed, *RUN, "--mixed_precision", "bf16", "--resume",
                                 "--export_dtype", "bfloat16"))
    return {"root": root, "fp32": fp32, "bf16": bf16, "resumed": again}


def test_bf16_trains_within_a_small_tolerance_of_float32(runs):
    root = runs["root"]
    assert runs["bf16"]["hardware"]["mixed_precision"] == "bf16"
    assert runs["fp32"]["hardware"]["mixed_precision"] == "no"
    full, half = losses(root / "fp32"), losses(root / "bf16")
    assert len(full) == len(half) == 50
    differences = [abs(a - b) for a, b in zip(full, half)]
    # Measured: at most 1.3 % of the loss (0.057 nats, at the 5th update, where the rate peaks), 0.007 on average.
    assert max(d / a for d, a in zip(differences, full)) < 0.03, differences
    assert sum(differences) / len(differences) < 0.02, differences
    assert max(differences) > 0  # bf16 really ran: its rounding shows
    assert sum(half[-5:]) / 5 < half[0] - 1.0  # and it learns
    for a, b in zip(runs["fp32"]["evaluations"], runs["bf16"]["evaluations"]):
        assert abs(a["validation_loss"] - b["validation_loss"]) < 0.05


def test_bf16_checkpoints_keep_float32_master_weights_and_export_float32(runs):
    folder = runs["root"] / "bf16"
    for name in ("checkpoint-25", "checkpoint-50", "final"):
        assert {t.dtype for t in weights(folder / name).values()} == {torch.float32}, name
    last, final = weights(folder / "checkpoint-50"), weights(folder / "final")
    assert all(torch.equal(final[k], t) for k, t in last.items())


def test_bf16_resume_is_bitwise_exact_and_exports_bfloat16_when_asked(runs):
    from transformers import AutoModelForSeq2SeqLM

    straight, resumed = runs["root"] / "bf16", runs["root"] / "bf16_resumed"
    expected, actual = weights(straight / "checkpoint-50"), weights(resumed / "checkpoint-50")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert runs["resumed"]["evaluations"] == runs["bf16"]["evaluations"]
    assert losses(resumed) == losses(straight)[25:]

    exported = weights(resumed / "final")
    assert {t.dtype for t in exported.values()} == {torch.bfloat16}
    assert all(torch.equal(exported[k], expected[k].to(torch.bfloat16)) for k in expected)
    assert json.loads((resumed / "final" / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForSeq2SeqLM.from_pretrained(resumed / "final")
    assert model.dtype == torch.bfloat16 and model.lm_head.weight is model.model.shared.weight


def test_fp16_is_refused_on_cpu_before_any_work(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    with pytest.raises(ValueError, match="--mixed_precision fp16 needs a GPU.*bf16"):
        fresh_run(*tiny_args(corpus, tmp_path / "run", "--mixed_precision", "fp16"))
    assert not (tmp_path / "run").exists()
