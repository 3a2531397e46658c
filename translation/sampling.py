"""Sampling that depends on the sentence and the seed alone, not on the batch it is decoded in.

transformers' sampling draws every row of a batch from torch's one global generator, so a sentence's sample changes
with its batch mates, its position and whatever else used the generator. Here each row draws from a generator of its
own, seeded from the request's seed and the row's sample number: `SeededSampling` runs last in `generate`'s logits
processors of a greedy search, applies the sampling warpers (temperature, top-k, top-p: transformers' own), draws the
row's token and leaves it the only one possible, so the greedy step takes it. A finished row keeps drawing (it is
padded anyway), so every row draws once per step, alone or in a batch.
"""

from __future__ import annotations

import secrets

import torch
from transformers import LogitsProcessor


def sample_seed(seed: int | None, sample: int) -> int:
    """The seed of the `sample`-th sample (n_best) of a sentence decoded with `seed`."""
    return (seed * 1_000_003 + sample) % 2**63


class SeededSampling(LogitsProcessor):
    """A logits processor (see the module docstring) for a batch of `rows` rows, each sentence's `options.n_best`
    samples adjacent."""

    def __init__(self, options, rows: int):
        from transformers import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                  TopPLogitsWarper)

        seed = options.seed if options.seed is not None else secrets.randbits(62)
        self.seeds = [sample_seed(seed, row % options.n_best) for row in range(rows)]
        self.generators = None  # made on the device of the first scores
        warpers = []
        if options.temperature is not None and options.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(options.temperature))
        if options.top_k is not None:
            warpers.append(TopKLogitsWarper(options.top_k))
        if options.top_p is not None and options.top_p < 1.0:
            warpers.append(TopPLogitsWarper(options.top_p))
        self.warpers = LogitsProcessorList(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            self.generators = [torch.Generator(scores.device).manual_seed(seed) for seed in self.seeds]
        probabilities = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        tokens = torch.cat([torch.multinomial(row, 1, generator=generator)
                            for row, generator in zip(probabilities, self.generators)])
        chosen = torch.full_like(scores, float("-inf"))
        chosen[torch.arange(scores.shape[0], device=scores.device), tokens] = 0.0
        return chosen
