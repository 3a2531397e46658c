"""From sentence pairs to token ids, chunk by chunk, for the data cache (`prepare.write_tokens`): our fast tokenizer
through the `tokenizers` library in its own threads, a slow one (Marian's SentencePiece `MarianTokenizer`, Python
code) in worker processes, one per CPU this process may use. Either way the ids are exactly those of
`tokenizer(sources, text_target=targets)`, chunks coming back in corpus order."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import os
from collections.abc import Callable

import numpy as np


def pair_encoder(tokenizer) -> Callable[[list[str], list[str]], tuple[list[list[int]], list[list[int]]]]:
    """A function (sources, targets) -> (input_ids, labels), the ids `tokenizer(sources, text_target=targets)`
    gives. For a plain fast tokenizer (ours) it calls the `tokenizers` library directly, in its own threads (no
    offsets, no transformers' per-batch bookkeeping); any other tokenizer goes through its `__call__`."""
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(tokenizer) is PreTrainedTokenizerFast:
        from tokenizers import Tokenizer

        plain = Tokenizer.from_str(backend.to_str())  # a copy without the saved padding and truncation settings
        plain.no_padding()
        plain.no_truncation()
        encode = getattr(plain, "encode_batch_fast", plain.encode_batch)

        def run(sources: list[str], targets: list[str]):
            encodings = encode(sources + targets)
            ids = [e.ids for e in encodings]
            return ids[: len(sources)], ids[len(sources):]

        return run

    def run_any(sources: list[str], targets: list[str]):
        encoded = tokenizer(sources, text_target=targets, truncation=False)
        return encoded["input_ids"], encoded["labels"]

    return run_any


def _flat(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, values) of id sequences: two int32 arrays, cheap to send from a worker process and to make Arrow."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    values = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(lengths.sum()))
    return lengths, values


def encode_flat(encode, sources: list[str], targets: list[str]):
    """`encode(sources, targets)` with each side as `_flat` arrays."""
    source_ids, target_ids = encode(sources, targets)
    return _flat(source_ids), _flat(target_ids)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: `taskset`, a container's cpuset), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def encoding_processes(tokenizer, chunks: int) -> int:
    """How many processes encode `chunks` chunks: one for a fast tokenizer (the `tokenizers` library runs its own
    threads) or a single chunk; else one per usable CPU, at most one per chunk."""
    if getattr(tokenizer, "is_fast", False):
        return 1
    return max(1, min(usable_cpus(), chunks))


_worker_encode = None  # a worker process's pair encoder, made once by `_start_worker`


def _start_worker(tokenizer) -> None:
    global _worker_encode
    _worker_encode = pair_encoder(tokenizer)


def _encode_in_worker(sources: list[str], targets: list[str]):
    return encode_flat(_worker_encode, sources, targets)


@contextlib.contextmanager
def chunk_encoder(tokenizer, processes: int = 1):
    """A function: an iterable of (sources, targets) chunks -> their `encode_flat` results, in order.

    One process: the `pair_encoder` in one thread, the next chunk encoded while the caller writes the current (the
    tokenizers library releases the GIL). Several: a pool of that many worker processes (started fresh, "spawn":
    the caller may hold threads, which a fork would copy in whatever state they are), each with its own copy of the
    tokenizer, a few chunks ahead of the caller. Either way the ids are those of `tokenizer(sources,
    text_target=targets)`: a tokenizer is deterministic, so the processes change the speed, never the cache."""
    if processes <= 1:
        encode = pair_encoder(tokenizer)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            yield lambda chunks: _in_order(pool, functools.partial(encode_flat, encode), chunks, ahead=1)
        return
    import multiprocessing

    pool = concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_start_worker, initargs=(tokenizer,))
    try:
        yield lambda chunks: _in_order(pool, _encode_in_worker, chunks, ahead=2 * processes)
    finally:
        pool.shutdown(cancel_futures=True)


def _in_order(pool, job, chunks, ahead: int):
    """job(sources, targets) for each chunk, run in `pool` up to `ahead` chunks ahead of the one yielded; results in
    the order of the chunks."""
    pending = collections.deque()
    for sources, targets in chunks:
        pending.append(pool.submit(job, sources, targets))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
