"""What the product's data code is compared with, kept out of the product: the old tokenization through
`datasets.map` (`tokenize_pairs`, what the data cache's `prepare.write_tokens` must equal and outrun), the per-pair
greedy cut (`greedy_batches`, what `TokenBatchSampler`'s per-run cut must equal) and batches cut from a random order
(`random_batches`, Marian's way, what length grouping must beat).

Used by bench.py, data_scale.py, gpu_check.py (run as scripts, this folder first on sys.path) and by the tests
(tests/test_data.py, tests/test_data_cache.py put this folder on sys.path).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence

from vanilla_transformer.training.data import padding_fraction

logger = logging.getLogger(__name__)


def tokenize_pairs(
    dataset,
    tokenizer,
    source_lang: str,
    target_lang: str,
    max_length: int | None = None,
    *,
    num_proc: int | None = None,
):
    """Tokenize a ``translation`` dataset with `datasets.map`: returns ``(dataset, n_filtered)``.

    The dataset has ``input_ids``, ``labels`` (both ending in ``</s>``), ``src_length`` and ``tgt_length``.
    Pairs with more than ``max_length`` tokens on either side are dropped; ``n_filtered`` counts them.
    """

    def encode(batch):
        sources = [pair[source_lang] for pair in batch["translation"]]
        targets = [pair[target_lang] for pair in batch["translation"]]
        encoded = tokenizer(sources, text_target=targets, truncation=False)
        return {
            "input_ids": encoded["input_ids"],
            "labels": encoded["labels"],
            "src_length": [len(ids) for ids in encoded["input_ids"]],
            "tgt_length": [len(ids) for ids in encoded["labels"]],
        }

    tokenized = dataset.map(
        encode, batched=True, remove_columns=dataset.column_names, num_proc=num_proc, desc="tokenizing"
    )
    n_filtered = 0
    if max_length is not None:
        before = len(tokenized)
        tokenized = tokenized.filter(
            lambda batch: [
                s <= max_length and t <= max_length for s, t in zip(batch["src_length"], batch["tgt_length"])
            ],
            batched=True,
            num_proc=num_proc,
            desc=f"dropping pairs over {max_length} tokens",
        )
        n_filtered = before - len(tokenized)
        logger.info("dropped %d of %d pairs longer than %d tokens on either side", n_filtered, before, max_length)
    return tokenized, n_filtered


def greedy_batches(order: Iterable[int], src: Sequence[int], tgt: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Cut ``order`` into consecutive batches whose padded size stays within ``max_tokens``, pair by pair."""
    batches, batch, max_src, max_tgt = [], [], 0, 0
    for i in order:
        s, t = max(max_src, src[i]), max(max_tgt, tgt[i])
        if batch and (len(batch) + 1) * (s + t) > max_tokens:
            batches.append(batch)
            batch, s, t = [], src[i], tgt[i]
        batch.append(i)
        max_src, max_tgt = s, t
    if batch:
        batches.append(batch)
    return batches


def random_batches(
    src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_tokens: int, seed: int = 0
) -> list[list[int]]:
    """Batches cut greedily from a random order under the same token budget (the baseline to compare with)."""
    order = list(range(len(src_lengths)))
    random.Random(seed).shuffle(order)
    return greedy_batches(order, src_lengths, tgt_lengths, max_tokens)


def random_padding_fraction(
    src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_tokens: int, seed: int = 0
) -> float:
    """`padding_fraction` of `random_batches`."""
    return padding_fraction(random_batches(src_lengths, tgt_lengths, max_tokens, seed), src_lengths, tgt_lengths)
