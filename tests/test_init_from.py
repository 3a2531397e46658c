"""`train --init_from`: a run that starts from a trained model (a model folder, a checkpoint folder, a converted
OPUS-MT folder, a Hub id through the local Hub server), the arguments it refuses, the fine-tuning schedules, the
starting model's identity in run_summary.json and the card, and bit-exact `--resume` of a fine-tuning run.

Tiny models on the synthetic corpus of tests/support/training.py; nothing is downloaded."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vanilla_transformer.modeling  # noqa: F401  (registers the Auto classes)
from support.hub_server import HubServer, hub_server  # noqa: F401  (pytest fixture)
from support.marian import converted_marian as convert_tiny_marian
from support.training import tiny_args, weights, write_corpus
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training.arguments import TrainArguments
from vanilla_transformer.training.init_from import weights_sha256
from vanilla_transformer.training.schedule import learning_rate, noam_lr
from vanilla_transformer.training.trainer import train

# MarianTokenizer recommends sacremoses (punctuation normalisation), which the tests do not need.
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

SHORT = ["--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--eval_samples", "4"]
FROZEN = ["--learning_rate", "0", "--lr_schedule", "constant", "--warmup_steps", "0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def base_run(corpus, tmp_path_factory) -> Path:
    """A tiny model trained from scratch for 4 updates: final/ and checkpoint-4/."""
    output_dir = tmp_path_factory.mktemp("base") / "run"
    train(*parse_args(tiny_args(corpus, output_dir, "--max_steps", "4", "--save_steps", "4", "--eval_steps", "4",
                                "--eval_samples", "4")))
    return output_dir


def tune_args(corpus: Path, output_dir: Path, init_from, *extra: str) -> list[str]:
    """The data and run arguments of `tiny_args`, without its model and tokenizer arguments, from `init_from`."""
    return ["--train_file", str(corpus / "train.tsv"), "--validation_file", str(corpus / "valid.tsv"),
            "--source_lang", "es", "--target_lang", "en", "--max_tokens", "300", "--eval_batch_size", "16",
            "--logging_steps", "1", "--report_to", "none", "--output_dir", str(output_dir),
            "--init_from", str(init_from), *extra]


def assert_same_weights(folder: Path, start: Path) -> None:
    expected, actual = weights(start), weights(folder)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def summary_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "final" / "run_summary.json").read_text())


# ---------------------------------------------------------------------------------------------------------------------
# The weights come from the starting model
# ---------------------------------------------------------------------------------------------------------------------


def test_learning_rate_zero_ends_with_the_starting_weights(base_run, corpus, tmp_path):
    start = base_run / "final"
    output_dir = tmp_path / "tuned"
    summary = train(*parse_args(tune_args(corpus, output_dir, start, *SHORT, *FROZEN, "--dropout", "0.2")))
    assert summary["steps"] == 2
    assert_same_weights(output_dir / "final", start)
    config = json.loads((output_dir / "final" / "config.json").read_text())
    assert config["dropout"] == 0.2 and config["d_model"] == 32  # regularisation changed, shape kept
    identity = summary_of(output_dir)["init_from"]
    assert identity["name"] == str(start) and identity["kind"] == "model folder"
    assert identity["weights_sha256"] == weights_sha256(start)
    assert summary_of(output_dir)["model"]["preset"] is None
    # the tokenizer is the starting model's, byte for byte
    assert (output_dir / "final" / "tokenizer.json").read_bytes() == (start / "tokenizer.json").read_bytes()
    card = (output_dir / "final" / "README.md").read_text()
    assert f"fine-tuned from `{start}`" in card and weights_sha256(start)[:16] in card


def test_a_checkpoint_folder_is_a_starting_point_too(base_run, corpus, tmp_path):
    start = base_run / "checkpoint-4"
    train(*parse_args(tune_args(corpus, tmp_path / "tuned", start, *SHORT, *FROZEN)))
    assert_same_weights(tmp_path / "tuned" / "final", start)
    assert summary_of(tmp_path / "tuned")["init_from"]["kind"] == "checkpoint"
    assert summary_of(tmp_path / "tuned")["steps"] == 2  # its step counter is not taken: a fresh run


def test_fine_tuning_moves_the_weights_with_the_default_schedule(base_run, corpus, tmp_path):
    start = base_run / "final"
    summary = train(*parse_args(tune_args(corpus, tmp_path / "tuned", start, *SHORT)))
    hyper = summary["hyperparameters"]
    assert (hyper["lr_schedule"], hyper["learning_rate"], hyper["warmup_steps"]) == ("inverse_sqrt", 5e-5, 500)
    assert not torch.equal(weights(tmp_path / "tuned" / "final")["model.shared.weight"],
                           weights(start)["model.shared.weight"])


# ---------------------------------------------------------------------------------------------------------------------
# What --init_from refuses
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, named", [
    (["--preset", "tiny"], ["--preset"]),
    (["--d_model", "64", "--layers", "2", "--heads", "4", "--ffn_dim", "128"],
     ["--d_model", "--layers", "--heads", "--ffn_dim"]),
    (["--vocab_size", "600"], ["--vocab_size"]),
    (["--tokenizer", "{tokenizer}"], ["--tokenizer"]),
    (["--model_overrides", "normalize_before=true,positional_encoding=concatenated,attention_dropout=0.1"],
     ["--model_overrides normalize_before", "--model_overrides positional_encoding"]),
])
def test_shape_and_vocabulary_arguments_are_refused_in_one_line(base_run, corpus, tmp_path, capsys, extra, named):
    extra = [value.format(tokenizer=base_run / "tokenizer") for value in extra]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(tune_args(corpus, tmp_path / "tuned", base_run / "final", *extra))
    assert exit_info.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(error) == 1, error
    for name in named:
        assert name in error[0]
    assert "attention_dropout," not in error[0].split("refused:")[1].split("(only")[0]  # regularisation may change
    assert not (tmp_path / "tuned").exists()


def test_a_missing_or_foreign_starting_model_is_one_line(base_run, corpus, tmp_path, capsys):
    for source, expected in ((tmp_path / "nowhere", "no such folder"),
                             (base_run, "training run's --output_dir"),
                             (base_run / "tokenizer", "holds a tokenizer but no model")):
        with pytest.raises(SystemExit):
            parse_args(tune_args(corpus, tmp_path / "tuned", source))
        error = capsys.readouterr().err
        assert expected in error and "Traceback" not in error, error


# ---------------------------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------------------------


def test_the_schedules():
    def rate(step, **kwargs):
        return learning_rate(step, 512, TrainArguments(**kwargs))

    assert rate(7, warmup_steps=4000) == noam_lr(7, 512, 4000)  # the §5.3 curve unchanged by default
    peak = 512 ** -0.5 * 4000 ** -0.5
    assert rate(4000, warmup_steps=4000, lr_schedule="inverse_sqrt") == pytest.approx(peak)
    assert rate(4000, warmup_steps=4000, lr_schedule="noam", learning_rate=1e-3) == pytest.approx(1e-3)
    kwargs = dict(warmup_steps=10, learning_rate=1e-4)
    assert rate(5, lr_schedule="inverse_sqrt", **kwargs) == pytest.approx(5e-5)
    assert rate(40, lr_schedule="inverse_sqrt", **kwargs) == pytest.approx(5e-5)  # 1e-4 · sqrt(10 / 40)
    assert rate(5, lr_schedule="constant", **kwargs) == pytest.approx(5e-5)
    assert rate(1000, lr_schedule="constant", **kwargs) == 1e-4
    assert rate(1, lr_schedule="constant", learning_rate=1e-4, warmup_steps=0) == 1e-4
    assert rate(55, lr_schedule="linear", max_steps=100, **kwargs) == pytest.approx(0.5e-4)
    assert rate(100, lr_schedule="linear", max_steps=100, **kwargs) == 0.0
    for schedule in ("noam", "inverse_sqrt", "linear", "constant"):
        assert all(math.isfinite(rate(step, lr_schedule=schedule, max_steps=50, **kwargs)) for step in range(1, 60))


def test_schedule_arguments_are_checked(corpus, tmp_path, capsys):
    for extra, expected in ((["--warmup_steps", "0"], "--warmup_steps must be positive"),
                            (["--learning_rate", "-1"], "--learning_rate must be >= 0"),
                            (["--learning_rate", "1e-3"], "--lr_scale and --learning_rate"),  # tiny_args: scale 2
                            (["--lr_schedule", "cosine"], "--lr_schedule")):
        with pytest.raises(SystemExit):
            parse_args(tiny_args(corpus, tmp_path / "run", *extra))
        assert expected in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# --resume of a fine-tuning run
# ---------------------------------------------------------------------------------------------------------------------


def test_resume_of_a_fine_tuning_run_is_bit_exact(base_run, corpus, tmp_path, capsys):
    start = base_run / "final"
    common = ["--save_steps", "2", "--eval_steps", "2", "--eval_samples", "4", "--dropout", "0.1",
              "--learning_rate", "1e-3", "--warmup_steps", "2", "--gradient_accumulation_steps", "2"]
    train(*parse_args(tune_args(corpus, tmp_path / "straight", start, "--max_steps", "6", *common)))
    train(*parse_args(tune_args(corpus, tmp_path / "resumed", start, "--max_steps", "2", *common)))
    summary = train(*parse_args(tune_args(corpus, tmp_path / "resumed", start, "--max_steps", "6", "--resume",
                                          *common)))
    assert summary["resumes"][0]["from_step"] == 2
    assert_same_weights(tmp_path / "resumed" / "final", tmp_path / "straight" / "final")
    assert summary["init_from"]["weights_sha256"] == weights_sha256(start)

    # another schedule, or another starting model, is refused by --resume
    for changed in (["--lr_schedule", "constant"], ["--learning_rate", "2e-3"]):
        with pytest.raises(SystemExit):
            parse_args(tune_args(corpus, tmp_path / "resumed", start, "--max_steps", "8", "--resume",
                                 *common, *changed))
        assert changed[0] in capsys.readouterr().err
    other = tmp_path / "other-start"  # the same model with one weight changed
    shutil.copytree(start, other)
    changed = weights(start)
    changed["model.shared.weight"][0, 0] += 1
    save_file(changed, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(SystemExit):
        parse_args(tune_args(corpus, tmp_path / "resumed", other, "--max_steps", "8", "--resume", *common))
    assert "--init_from" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# A converted OPUS-MT model with its SentencePiece tokenizer
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted_marian(tmp_path_factory) -> Path:
    """A tiny random MarianMTModel with its SentencePiece tokenizer, converted with `convert-marian`."""
    return convert_tiny_marian(tmp_path_factory.mktemp("marian"))


def test_a_converted_marian_model_fine_tunes_with_its_sentencepiece_tokenizer(converted_marian, corpus, tmp_path):
    from transformers import AutoTokenizer

    summary = train(*parse_args(tune_args(corpus, tmp_path / "frozen", converted_marian, *SHORT, *FROZEN)))
    assert summary["init_from"]["kind"] == "converted OPUS-MT (Marian)"
    assert_same_weights(tmp_path / "frozen" / "final", converted_marian)
    assert type(AutoTokenizer.from_pretrained(tmp_path / "frozen" / "final")).__name__ == "MarianTokenizer"

    output_dir = tmp_path / "tuned"
    common = ["--save_steps", "2", "--eval_steps", "2", "--eval_samples", "4", "--learning_rate", "1e-3",
              "--warmup_steps", "1"]
    summary = train(*parse_args(tune_args(corpus, output_dir, converted_marian, "--max_steps", "2", *common)))
    assert math.isfinite(summary["final_validation"]["validation_loss"])
    assert not torch.equal(weights(output_dir / "final")["model.shared.weight"],
                           weights(converted_marian)["model.shared.weight"])
    resumed = train(*parse_args(tune_args(corpus, output_dir, converted_marian, "--max_steps", "4", "--resume",
                                          *common)))
    assert resumed["steps"] == 4


# ---------------------------------------------------------------------------------------------------------------------
# A Hub id (the local Hub server of tests/support/hub_server)
# ---------------------------------------------------------------------------------------------------------------------


def test_a_hub_id_is_downloaded_and_used(hub_server: HubServer, base_run, corpus, tmp_path):  # noqa: F811
    from huggingface_hub import HfApi

    repo = f"{hub_server.user}/tiny-es-en"
    api = HfApi()
    api.create_repo(repo)
    api.upload_folder(folder_path=str(base_run / "final"), repo_id=repo)
    summary = train(*parse_args(tune_args(corpus, tmp_path / "tuned", repo, *SHORT, *FROZEN)))
    assert summary["init_from"]["name"] == repo
    assert summary["init_from"]["weights_sha256"] == weights_sha256(base_run / "final")
    assert_same_weights(tmp_path / "tuned" / "final", base_run / "final")


# ---------------------------------------------------------------------------------------------------------------------
# `prepare --init_from`: the data cache filled with the starting model's tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def test_prepare_then_fine_tune_reuses_the_tokens(base_run, corpus, tmp_path, capsys, monkeypatch):
    from vanilla_transformer.cli import main as cli
    from vanilla_transformer.training import prepare

    start, output = base_run / "final", tmp_path / "tuned"
    argv = tune_args(corpus, output, start, *SHORT, *FROZEN)
    assert cli.main(["prepare", *argv]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert Path(summary["tokenizer"]) == start and "tokenizer_trained" not in summary
    assert not (output / "tokenizer").exists()

    def forbidden(*args, **kwargs):
        raise AssertionError("train did the work again")

    monkeypatch.setattr(prepare, "write_tokens", forbidden)
    monkeypatch.setattr(prepare, "write_pairs", forbidden)
    assert train(*parse_args(argv))["steps"] == 2


def test_resume_under_the_linear_schedule_keeps_max_steps():
    from vanilla_transformer.training.init_from import record_differences

    def record(max_steps, schedule="linear"):
        return {"arguments": {"max_steps": max_steps}, "init_from": None,
                "schedule": {"lr_schedule": schedule, "learning_rate": 1e-4}}

    assert record_differences(record(100), record(100)) == []
    assert record_differences(record(100), record(200)) == [
        "--max_steps 100 → 200 (the linear schedule decays to 0 at --max_steps)"]
    assert record_differences(record(100, "inverse_sqrt"), record(200, "inverse_sqrt")) == []
    assert record_differences({"arguments": {"max_steps": 100}}, record(100, "noam")) == []  # an older checkpoint


def test_arguments_that_skipped_validation_get_the_papers_warmup():
    assert learning_rate(10, 512, TrainArguments()) == noam_lr(10, 512, 4000)
