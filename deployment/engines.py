"""The translation engines behind one interface: a model folder run by transformers' `generate`, or a folder written
by `vanilla-transformer export --format ctranslate2` run by CTranslate2. Both decode with the §6.1 settings, keep
blank lines and split over-long inputs the same way (`training.evaluation.translate_in_pieces`).

    engine = load_engine("runs/bible/final")                     # or engine="ctranslate2" on an export
    engine.translate(["Dios es amor."], num_beams=4)             # -> ["God is love."]
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from ..modeling.modeling_vanilla_transformer import EXTRA_OUTPUT_TOKENS
from ..training.evaluation import translate, translate_in_pieces

ENGINES = ("transformers", "ctranslate2")


class TranslationEngine(Protocol):
    name: str
    tokenizer: object

    def translate(self, sentences: list[str], batch_size: int = 64, num_beams: int = 4, length_penalty: float = 0.6,
                  progress: bool = False) -> list[str]:
        """Translations of `sentences`, in their order."""


def load_model_and_tokenizer(model_dir: str, device: str | None = None):
    """A saved model folder (exported, best/, averaged or a checkpoint) in eval mode, with its tokenizer."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from .. import modeling  # noqa: F401  (registers the Auto classes)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


class TransformersEngine:
    """Our model through transformers' `generate` (`training.evaluation.translate`)."""

    name = "transformers"

    def __init__(self, model_dir: str, device: str | None = None):
        self.model, self.tokenizer = load_model_and_tokenizer(model_dir, device)

    def translate(self, sentences: list[str], batch_size: int = 64, num_beams: int = 4, length_penalty: float = 0.6,
                  progress: bool = False) -> list[str]:
        return translate(self.model, self.tokenizer, sentences, batch_size, num_beams, length_penalty,
                         progress=progress)


class CTranslate2Engine:
    """A folder written by `vanilla-transformer export --format ctranslate2`, run by CTranslate2."""

    name = "ctranslate2"

    def __init__(self, model_dir: str, device: str | None = None):
        from .ctranslate2_runtime import CTranslate2Translator

        self.translator = CTranslate2Translator(model_dir, device=device or "auto")  # auto: a GPU when there is one
        self.tokenizer = self.translator.tokenizer
        # The export's position table must hold the source and its source length + 50 output tokens.
        self.limit = max(1, self.translator.decoding["max_positions"] - EXTRA_OUTPUT_TOKENS)

    def translate(self, sentences: list[str], batch_size: int = 64, num_beams: int = 4, length_penalty: float = 0.6,
                  progress: bool = False) -> list[str]:
        # Blank lines and over-long sentences as for our model.
        return translate_in_pieces(sentences, self.tokenizer, self.limit, lambda pieces: self.translator.translate(
            pieces, batch_size, num_beams, length_penalty, progress=progress))


ENGINE_CLASSES = {engine.name: engine for engine in (TransformersEngine, CTranslate2Engine)}


def load_engine(model_dir: str, engine: str = "transformers", device: str | None = None) -> TranslationEngine:
    """The engine `engine` ("transformers" or "ctranslate2") for `model_dir`."""
    if engine not in ENGINE_CLASSES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return ENGINE_CLASSES[engine](model_dir, device)


def device_problem(device: str | None) -> str | None:
    """Why `--device` cannot be used on this machine, or None."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, ...)"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device}: CUDA is not available on this machine; use --device cpu"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: MPS is not available on this machine; use --device cpu"
    return None


def model_folder_problem(model_dir: str) -> str | None:
    """Why `model_dir` is not a model folder to load, or None."""
    path = Path(model_dir)
    if not path.is_dir():
        return f"MODEL_DIR {model_dir} is not a directory"
    if not (path / "config.json").is_file():
        return f"MODEL_DIR {model_dir} is not a model folder (no config.json): give final/, best/, a checkpoint or " \
               "an averaged model"
    return None
