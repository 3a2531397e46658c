"""The tiny training setup the training-level tests share: a synthetic corpus (word-for-word "Spanish" →
"English"), the arguments of a tiny run on it, and the weights of a saved folder."""

import random
from pathlib import Path

import torch
from safetensors.torch import load_file

from vanilla_transformer.training.init_from import PAPER_OPTIMIZER

WORDS = [("uno", "one"), ("dos", "two"), ("tres", "three"), ("casa", "house"), ("perro", "dog"), ("gato", "cat"),
         ("rojo", "red"), ("verde", "green"), ("grande", "big"), ("come", "eats"), ("ve", "sees"), ("el", "the"),
         ("y", "and"), ("agua", "water"), ("pan", "bread"), ("libro", "book"), ("sol", "sun"), ("luna", "moon")]


def write_corpus(folder: Path) -> Path:
    """train/valid/test TSV files (header `es<TAB>en`) of word-for-word sentence pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, size, seed in (("train", 160, 0), ("valid", 16, 1), ("test", 12, 2)):
        rng = random.Random(seed)
        lines = ["es\ten"]
        for _ in range(size):
            pairs = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
            lines.append(" ".join(p[0] for p in pairs) + "\t" + " ".join(p[1] for p in pairs))
        (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# The tiny runs keep the recipe they were tuned on, §5.3's (these flags, and --lr_scale 2 with warmup 4 on width 32),
# not the small-model recipe `--preset tiny` gets by default: with its N(0, 0.02) weights and clipping, 8 updates of
# a width-32 model translate to empty strings and bf16 drifts 30 % from fp32.
PAPER_RECIPE = [*(item for name, value in PAPER_OPTIMIZER.items() for item in (f"--{name}", str(value))),
                "--model_overrides", "init_std=null"]


def tiny_args(corpus: Path, output_dir: Path, *extra: str) -> list[str]:
    """A tiny run's arguments, `extra` last (a flag given again there wins); no averaging at the end unless `extra`
    asks for it (test_averaging.py does)."""
    return ["--train_file", str(corpus / "train.tsv"), "--validation_file", str(corpus / "valid.tsv"),
            "--source_lang", "es", "--target_lang", "en", "--preset", "tiny", "--d_model", "32", "--layers", "1",
            "--heads", "2", "--ffn_dim", "64", "--vocab_size", "457", "--max_tokens", "300", "--warmup_steps", "4",
            "--lr_scale", "2", *PAPER_RECIPE, "--eval_samples", "12", "--eval_batch_size", "16",
            "--logging_steps", "2", "--average_last", "0",
            "--report_to", "none", "--output_dir", str(output_dir), *extra]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))
