"""Running `vanilla-transformer` commands in the test process and reading their one error line; a random tiny model
folder to run them on; the arguments of a fast evaluation."""

from pathlib import Path

import torch

from vanilla_transformer.cli import main as cli
from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

# Fast evaluations: two sentences, greedy.
FAST = ("--eval_samples", "2", "--num_beams", "1")


def command(capsys, *argv: str) -> tuple[int, str, str]:
    """`vanilla-transformer ARGV` in this process: (exit status, stdout, stderr)."""
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def error_line(stderr: str) -> str:
    """The one error line of a command; there must be exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, stderr
    return lines[0]


def tiny_model_folder(folder: Path, tokenizer_from: Path, **overrides) -> Path:
    """A random tiny model with the tokenizer of `tokenizer_from`, saved as a model folder."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    torch.manual_seed(0)
    sizes = dict(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                 encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(**{**sizes, **overrides}))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
