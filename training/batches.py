"""The training data as the loop reads it: tokenized once for all processes (`prepare_data`; refused when the length
limit guts it, `prepare.check_kept_pairs`), then read as this process's endless micro-batches (`MicroBatches`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from accelerate import Accelerator

from .arguments import DataArguments
from .memory import memory_note

logger = logging.getLogger(__name__)


def prepare_data(accelerator: Accelerator, data: DataArguments, output_dir: Path):
    """The tokenizer and the tokenized data (`prepare.prepare_in_cache`), prepared once and memory-mapped by every
    process: the main process reads, trains the tokenizer and tokenizes (or finds it all in the cache) while the
    others wait; then each node's first process looks for the result (a `--data_cache_dir` on a node's own disk is
    filled there), then every other process memory-maps it."""
    from .prepare import prepare_in_cache as prepare

    start = time.perf_counter()
    progress = accelerator.is_local_main_process
    prepared = prepare(data, output_dir, progress) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    if prepared is None and accelerator.is_local_main_process:
        prepared = prepare(data, output_dir, progress, main=False)
    accelerator.wait_for_everyone()
    if prepared is None:
        prepared = prepare(data, output_dir, main=False)
    logger.info("rank %d: data ready in %.1f s; %s", accelerator.process_index, time.perf_counter() - start,
                memory_note())
    return prepared


class MicroBatches:
    """Endless micro-batches of this process, epoch after epoch, knowing where it is (`epoch`, `position`)."""

    def __init__(self, dataset, sampler, collator, epoch: int = 0, position: int = 0):
        self.rows = dataset.select_columns(["input_ids", "labels"])
        self.sampler, self.collator = sampler, collator
        self.epoch, self.position = epoch, position
        self._iterator = None

    def __iter__(self):
        return self

    def __next__(self) -> tuple[dict, list[int]]:
        for _ in range(2):
            if self._iterator is None:
                self.sampler.set_epoch(self.epoch, start_index=self.position)
                self._iterator = iter(self.sampler)
            indices = next(self._iterator, None)
            if indices is not None:
                self.position += 1
                return self.collate(indices), indices
            self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
        raise RuntimeError("the training data gives no batches")

    def collate(self, indices: list[int]) -> dict:
        columns = self.rows[indices]
        features = [{"input_ids": s, "labels": t} for s, t in zip(columns["input_ids"], columns["labels"])]
        return self.collator(features)
