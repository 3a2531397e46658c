"""The engine interface every translator implements, and our model's engine (transformers' `generate`).

An engine decodes rows of source token ids, each row with its own limit of new tokens, so that a sentence's result
never depends on its batch mates: the server batches sentences of many requests, `translate` batches by length, and
`evaluate`'s BLEU must not depend on `--batch_size`. `translate()` (translate.py) does everything around it (lines,
splitting, batching, joining); CTranslate2's engine (deployment/ctranslate2_runtime.py) implements the same interface.
"""

from __future__ import annotations

import threading
from typing import Protocol

import torch

from ..modeling.modeling_vanilla_transformer import new_token_limit
from .options import DecodingOptions
from .sampling import SeededSampling


class TranslationEngine(Protocol):
    """What `translate()` and the server need of a translator.

    Thread safety: `generate` is called by one thread at a time (the server gives each engine replica its own
    thread); `tokenizer_lock` is held by whoever uses `tokenizer`, since a fast tokenizer must not be used by two
    threads at once and the server tokenizes requests while a batch decodes.
    """

    name: str
    tokenizer: object
    tokenizer_lock: threading.Lock
    source_limit: int | None  # the longest source piece, in tokens (longer sentences are split); None: no limit

    def new_token_limit(self, source_length: int) -> int:
        """The §6.1 limit of new tokens for a source of `source_length` tokens on this engine."""

    def unsupported(self, options: DecodingOptions) -> str | None:
        """Why this engine cannot decode with `options` (one line naming the option), or None."""

    def generate(self, rows: list[list[int]], limits: list[int], options: DecodingOptions) -> list[list[str]]:
        """The `options.n_best` translations (best first) of each row of source token ids, row i at most
        `limits[i]` new tokens, exactly as the row would be decoded alone."""


class RowLimits:
    """A stopping criterion: row i of the batch (all its beams) stops once it has `limits[i]` new tokens.
    transformers' beam search finalizes a beam that a stopping criterion stops exactly as one at `max_length` (the
    beam is scored and competes with the ended ones), so a row ends where it would have ended alone."""

    def __init__(self, limits: list[int], device):
        self.lengths = torch.tensor(limits, device=device) + 1  # + the decoder start token
        self.expanded = None  # one length per beam (or candidate), made at the first step

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.expanded is None or self.expanded.shape[0] != input_ids.shape[0]:
            self.expanded = self.lengths.repeat_interleave(input_ids.shape[0] // self.lengths.shape[0])
        return input_ids.shape[1] >= self.expanded


class TransformersEngine:
    """Our model (or any transformers encoder–decoder) through `generate`, every row with its own length limit.

    `synced_gpus=True` (FSDP evaluation) keeps the processes stepping together: `translate()` then runs as many
    `generate` calls on every process. `device`: where the inputs go (default: the model's first parameter's)."""

    name = "transformers"

    def __init__(self, model, tokenizer, synced_gpus: bool = False, device: torch.device | str | None = None):
        self.model, self.tokenizer, self.synced_gpus = model, tokenizer, synced_gpus
        self.tokenizer_lock = threading.Lock()
        self.source_limit = getattr(model.config, "max_position_embeddings", None)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device

    def new_token_limit(self, source_length: int) -> int:
        return new_token_limit(source_length, self.source_limit)

    def unsupported(self, options: DecodingOptions) -> str | None:
        return None

    @torch.no_grad()
    def generate(self, rows: list[list[int]], limits: list[int], options: DecodingOptions) -> list[list[str]]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        n_best = options.n_best
        extra = {"num_return_sequences": n_best}
        if options.do_sample:  # each sample is a row of its own, drawn from its own generator (sampling.py)
            rows, limits = [row for row in rows for _ in range(n_best)], [x for x in limits for _ in range(n_best)]
            extra = {"do_sample": False, "logits_processor": LogitsProcessorList([SeededSampling(options, len(rows))])}
        input_ids, attention_mask = pad_batch(rows, self.tokenizer.pad_token_id, self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max(limits),
                stopping_criteria=StoppingCriteriaList([RowLimits(limits, self.device)]),
                synced_gpus=self.synced_gpus, **options.beam_options, **extra)
        finally:
            self.model.train(was_training)
        with self.tokenizer_lock:
            texts = [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]
        return [texts[i:i + n_best] for i in range(0, len(texts), n_best)]


def pad_batch(rows: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask) of token-id lists."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, ids in enumerate(rows):
        input_ids[index, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[index, :len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)
