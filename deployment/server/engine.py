"""The translation engine behind the server: one function, `open_engine`, gets it.

The server decodes sentences of many requests in one batch, so a sentence's result must not depend on its batch
mates. Offline `translate` gives a batch up to (its longest source) + 50 new tokens; here every sentence keeps its own
limit, min(its length + 50, max_position_embeddings - 1) (§6.1), which is what `translate([sentence])` gives it:

* our model: a stopping criterion that ends each row's beams at the row's own limit. transformers' beam search
  finalizes a beam that hits a stopping criterion exactly as it finalizes one at `max_length` (the beam, as it is, is
  scored and competes with the ended ones), so a row ends where it would have ended alone.
* CTranslate2 (one `max_decoding_length` per call): the batch runs to its longest row's limit; a row whose returned
  hypotheses all ended before the row's own limit was searched exactly as alone (the search is the same up to there);
  any other row is decoded again on its own with its own limit.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...modeling.modeling_vanilla_transformer import EXTRA_OUTPUT_TOKENS
from ...training.evaluation import explicit_length_is_intended, model_length_limit, pad_batch
from ..engines import ENGINES, load_model_and_tokenizer

logger = logging.getLogger(__name__)

@dataclass
class ModelInfo:
    """What the web page and `/health` show about the model: its card's name, direction and scores."""

    name: str
    source_lang: str | None = None
    target_lang: str | None = None
    metrics: list[dict] = field(default_factory=list)  # {"name", "split", "value"}


def open_engine(model_dir: str, engine: str = "transformers", device: str | None = None, threads: int = 0):
    """The engine the server runs: `TransformersEngine` for a model folder, `CTranslate2Engine` for a folder written
    by `vanilla-transformer export --format ctranslate2` (``threads``: its CPU threads, 0 = its default; torch's are
    set by the caller). Raises ValueError/OSError naming what is wrong."""
    if engine == "transformers":
        model, tokenizer = load_model_and_tokenizer(model_dir, device)
        return TransformersEngine(model, tokenizer, read_model_info(model_dir))
    if engine == "ctranslate2":
        from ..ctranslate2_runtime import CTranslate2Translator

        translator = CTranslate2Translator(model_dir, device=device or "auto", threads=threads)
        return CTranslate2Engine(translator, read_model_info(model_dir))
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def read_model_info(model_dir: str | Path) -> ModelInfo:
    """Name, languages and scores from the model card (README.md front matter) when the folder has one."""
    from ...hub_card import front_matter

    card = Path(model_dir) / "README.md"
    meta = front_matter(card.read_text(encoding="utf-8")) if card.is_file() else {}
    languages = meta.get("language") or []
    index = (meta.get("model-index") or [{}])[0]
    metrics = [{"name": metric.get("name") or metric.get("type"), "split": result.get("dataset", {}).get("split"),
                "value": metric.get("value")}
               for result in index.get("results", []) for metric in result.get("metrics", [])]
    return ModelInfo(name=index.get("name") or Path(model_dir).resolve().name,
                     source_lang=languages[0] if len(languages) == 2 else None,
                     target_lang=languages[1] if len(languages) == 2 else None, metrics=metrics)


class RowLimits:
    """A stopping criterion: row i of the batch (all its beams) stops once it has `new_tokens[i]` new tokens."""

    def __init__(self, new_tokens: list[int], device):
        self.lengths = torch.tensor(new_tokens, device=device) + 1  # + the decoder start token

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        per_row = input_ids.shape[0] // self.lengths.shape[0]  # beams (or candidates) of one sentence
        return input_ids.shape[1] >= self.lengths.repeat_interleave(per_row)


class TransformersEngine:
    """Our model through `generate`, each row with its own length limit (see the module docstring)."""

    name = "transformers"

    def __init__(self, model, tokenizer, info: ModelInfo):
        self.model, self.tokenizer, self.info = model.eval(), tokenizer, info
        self.tokenizer_lock = threading.Lock()  # a fast tokenizer is not to be used by two threads at once
        self.limit = model_length_limit(model)  # the longest source piece, in tokens
        self.device = next(model.parameters()).device

    def new_tokens(self, length: int) -> int:
        """The §6.1 limit of a source of `length` tokens, as `translate([sentence])` sets it."""
        tokens = length + EXTRA_OUTPUT_TOKENS
        return max(1, min(tokens, self.limit - 1)) if self.limit else tokens

    def generate(self, rows: list[list[int]], new_tokens: list[int], num_beams: int = 4, length_penalty: float = 0.6,
                 n_best: int = 1) -> list[list[str]]:
        """The `n_best` best translations (best first) of each row of token ids, row i at most `new_tokens[i]`."""
        from transformers import StoppingCriteriaList

        input_ids, attention_mask = pad_batch(rows, self.tokenizer.pad_token_id, self.device)
        beam = {"length_penalty": length_penalty} if num_beams > 1 else {}  # a beam-search setting only
        with torch.inference_mode(), explicit_length_is_intended():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                max_new_tokens=max(new_tokens), num_return_sequences=n_best,
                stopping_criteria=StoppingCriteriaList([RowLimits(new_tokens, self.device)]), **beam)
        with self.tokenizer_lock:
            texts = [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]
        return [texts[i:i + n_best] for i in range(0, len(texts), n_best)]


class CTranslate2Engine:
    """A CTranslate2 export, each row with its own length limit (see the module docstring)."""

    name = "ctranslate2"

    def __init__(self, translator, info: ModelInfo):
        self.translator, self.info = translator, info
        self.tokenizer = translator.tokenizer
        self.tokenizer_lock = threading.Lock()  # a fast tokenizer is not to be used by two threads at once
        # The position table must hold the source and its source length + 50 output tokens.
        self.limit = max(1, translator.decoding["max_positions"] - EXTRA_OUTPUT_TOKENS)

    def new_tokens(self, length: int) -> int:
        return length + EXTRA_OUTPUT_TOKENS

    def generate(self, rows: list[list[int]], new_tokens: list[int], num_beams: int = 4, length_penalty: float = 0.6,
                 n_best: int = 1) -> list[list[str]]:
        translator = self.translator
        if translator.decoding.get("forced_eos_token") is not None:  # its own exact path, best hypothesis only
            ids = [translator.generate_ids([row], num_beams, length_penalty, limit)[0]
                   for row, limit in zip(rows, new_tokens)]
            with self.tokenizer_lock:
                texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            return [[text.strip()] * n_best for text in texts]
        hypotheses = max(n_best, num_beams)  # all the beams: to see whether any reached the row's own limit
        tokens = [[translator.tokens[i] for i in row] for row in rows]
        results = list(translator._search(tokens, num_beams, length_penalty, max(new_tokens), hypotheses=hypotheses))
        for row, limit in enumerate(new_tokens):
            if limit < max(new_tokens) and any(len(h) >= limit for h in results[row].hypotheses):
                results[row] = translator._search([tokens[row]], num_beams, length_penalty, limit,
                                                  hypotheses=hypotheses)[0]
        ids = [[[translator.ids[token] for token in h] for h in result.hypotheses[:n_best]] for result in results]
        with self.tokenizer_lock:
            return [[text.strip() for text in self.tokenizer.batch_decode(row, skip_special_tokens=True)]
                    for row in ids]
