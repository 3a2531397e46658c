"""benchmarks/gpu_check.py, the one-shot GPU check, in its --dry-run mode on CPU: the same code path with the tiny
preset, so the script is known to run the day a GPU is lent."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.training import write_corpus
from vanilla_transformer.cli.train import parse_args

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_trains_on_fused_attention_and_reports(tmp_path):
    gpu_check = load_script()
    corpus = write_corpus(tmp_path / "corpus")
    markdown = tmp_path / "BENCHMARKS.md"
    head = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8").split(gpu_check.SECTION_BEGIN)[0]
    markdown.write_text(f"{head}{gpu_check.SECTION_BEGIN}\nold figures\n{gpu_check.SECTION_END}\n\nkept\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--train_file", str(corpus / "train.tsv"), "--validation_file",
         str(corpus / "valid.tsv"), "--json", str(tmp_path / "gpu_check.json"), "--markdown", str(markdown)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["dry_run"] and results["device"]["type"] == "cpu"
    training = results["training"]
    assert training["mixed_precision"] == "bf16" and training["updates"] == 4
    assert any("flash" in k for k in training["attention_kernels"])
    assert not any("math" in k for k in training["attention_kernels"])
    # Timings depend on the machine's load (a "peak" measured on a busy CPU can be below the training rate), so only
    # their consistency is checked: the MFU is the model's FLOP rate over the measured matmul rate.
    assert training["target_tokens_per_s"] > 0 and results["matmul_bf16_flop_s"] > 0
    assert results["mfu_measured"] == pytest.approx(training["model_flop_s"] / results["matmul_bf16_flop_s"])
    # The FLOP estimate behind the MFU equals PyTorch's own count of the same batch (attention aside on CPU).
    assert training["flop_estimate_check"]["ratio"] == pytest.approx(1.0, abs=0.02)
    assert results["translation"]["sentences"] == 8 and results["translation"]["sentences_per_s"] > 0
    compiled = results["compiled_decoding"]  # the compiled static-cache step decodes eager's tokens
    batches = [key for key in compiled if key.startswith("batch_")]
    assert batches == ["batch_1", "batch_16"] and all(compiled[key]["identical"] for key in batches)
    assert compiled["batch_1"]["compiled_ms_per_step"] > 0
    assert results["within_budget"] == (results["total_seconds"] <= gpu_check.BUDGET_SECONDS)
    assert "multi_process" not in results

    text = markdown.read_text(encoding="utf-8")
    assert text.startswith(head) and text.rstrip().endswith("kept")  # only its own section changes
    assert text.count(gpu_check.SECTION_BEGIN) == 1 and "old figures" not in text
    assert "## GPU check (dry run on CPU" in text and "MFU vs measured bf16 matmul" in text
    assert "compiled static-cache step (aot_eager)" in text


def test_without_a_gpu_it_asks_for_dry_run(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_script().main(["--markdown", "", "--json", ""]) == 2
    assert "--dry-run" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_multi_gpu_commands_are_valid_trainer_commands(kind, tmp_path):
    """The DDP / FSDP2 runs launch the real trainer; its part of the command passes the trainer's own checks."""
    gpu_check = load_script()
    args = gpu_check.parse_args([])
    from vanilla_transformer.training.tokenizer import MIN_VOCAB_SIZE, train_shared_bpe

    train_shared_bpe(["uno dos", "one two"], MIN_VOCAB_SIZE).save_pretrained(tmp_path / "tokenizer")  # as the script
    command = gpu_check.multi_process_command(kind, 8, tmp_path / "out", tmp_path / "tokenizer", args)
    assert command[command.index("--num_processes") + 1] == "8"
    if kind == "fsdp2":
        assert command[command.index("--config_file") + 1] == str(REPO / "examples" / "accelerate" / "fsdp2.yaml")
    else:
        assert "--multi_gpu" in command
    data, model, train = parse_args(command[command.index("vanilla_transformer.training.train") + 1:])
    assert (data.dataset, model.preset, train.mixed_precision) == ("bible", "base", "bf16")
