"""Dynamic batching: sentences of concurrent requests queued, decoded together in one worker thread, each answer
routed back to its request.

A request's pieces (`submit`) wait in one queue. The worker takes the oldest waiting piece, waits up to `max_wait`
seconds for company (less when the queue already holds a batch's worth of tokens), then fills the batch with the
waiting pieces of the same decoding options closest in length to the oldest one, as long as the padded batch stays
within `max_batch_tokens` (rows × longest row) and `max_batch_size` rows. The oldest piece is always in the next
batch, so nothing waits forever. The model runs only in this thread: never two `generate` calls at once.

A piece whose request went away (the client disconnected, `cancel`) is dropped before it reaches a batch. A batch
that fails is decoded again piece by piece, so only the piece that fails gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds `max_queue` pieces: the request is refused (503 with Retry-After)."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new work."""


@dataclass(frozen=True)
class Options:
    """Decoding options: pieces share a batch only when they share these."""

    num_beams: int = 4
    length_penalty: float = 0.6
    n_best: int = 1


@dataclass(eq=False)
class Piece:
    ids: list[int]
    new_tokens: int
    options: Options
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False


class Batcher:
    """See the module docstring. `generate(rows, new_tokens, num_beams, length_penalty, n_best)` is the engine's;
    `observe_batch(rows, padded_tokens, seconds)` and `observe_wait(seconds)` report to the metrics."""

    def __init__(self, generate: Callable, max_batch_tokens: int = 4096, max_batch_size: int = 64,
                 max_wait: float = 0.005, max_queue: int = 1024, observe_batch: Callable | None = None,
                 observe_wait: Callable | None = None):
        self.generate = generate
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.max_wait, self.max_queue = max_wait, max_queue
        self.observe_batch = observe_batch or (lambda rows, tokens, seconds: None)
        self.observe_wait = observe_wait or (lambda seconds: None)
        self.pending: list[Piece] = []
        self.condition = threading.Condition()
        self.closing = False  # no new work
        self.draining = False  # no more waiting for company: the server is stopping
        self.batches = 0
        self.thread = threading.Thread(target=self._run, name="translation-worker", daemon=True)
        self.thread.start()

    # -- the event loop's side -----------------------------------------------------------------------------------

    def queued(self) -> int:
        with self.condition:
            return len(self.pending)

    def submit(self, rows: list[list[int]], new_tokens: list[int], options: Options) -> list[Piece]:
        """Queue the pieces of one request (all or none); each `piece.future` gets its `n_best` translations."""
        loop = asyncio.get_running_loop()
        pieces = [Piece(ids, limit, options, loop.create_future(), loop) for ids, limit in zip(rows, new_tokens)]
        with self.condition:
            if self.closing:
                raise ShuttingDown("the server is shutting down")
            if len(self.pending) + len(pieces) > self.max_queue:
                raise QueueFull(f"the queue is full ({len(self.pending)} sentences waiting)")
            self.pending.extend(pieces)
            self.condition.notify()
        return pieces

    def cancel(self, pieces: list[Piece]) -> None:
        """Drop the pieces that have not reached a batch yet (their request went away)."""
        with self.condition:
            for piece in pieces:
                piece.cancelled = True
            self.pending = [piece for piece in self.pending if not piece.cancelled]

    def drain(self) -> None:
        """Decode what is queued at once, without waiting for company (the server is stopping)."""
        with self.condition:
            self.draining = True
            self.condition.notify()

    def close(self, timeout: float | None = None) -> None:
        """Take no new work, decode what is queued, stop the worker."""
        with self.condition:
            self.closing = True
            self.condition.notify()
        self.thread.join(timeout)

    # -- the worker thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._decode(batch)

    def _next_batch(self) -> list[Piece] | None:
        with self.condition:
            while not self.pending:
                if self.closing:
                    return None
                self.condition.wait()
            deadline = self.pending[0].arrived + self.max_wait
            while not (self.closing or self.draining or self._enough_waiting()) and time.perf_counter() < deadline:
                self.condition.wait(max(deadline - time.perf_counter(), 0.0))
                if not self.pending:  # all cancelled meanwhile
                    return []
            batch = self._choose()
            chosen = set(map(id, batch))
            self.pending = [piece for piece in self.pending if id(piece) not in chosen]
            return batch

    def _enough_waiting(self) -> bool:
        options = self.pending[0].options
        same = [piece for piece in self.pending if piece.options == options]
        return len(same) >= self.max_batch_size or sum(len(p.ids) for p in same) >= self.max_batch_tokens

    def _choose(self) -> list[Piece]:
        """The oldest piece and the waiting pieces of its options closest to it in length, within the limits."""
        oldest = self.pending[0]
        candidates = sorted((p for p in self.pending if p.options == oldest.options),
                            key=lambda p: (abs(len(p.ids) - len(oldest.ids)), p.arrived))
        batch, longest = [], 0
        for piece in candidates:
            width = max(longest, len(piece.ids))
            if batch and ((len(batch) + 1) * width > self.max_batch_tokens or len(batch) >= self.max_batch_size):
                continue
            batch.append(piece)
            longest = width
        return batch

    def _decode(self, batch: list[Piece]) -> None:
        batch = [piece for piece in batch if not piece.cancelled and not piece.future.done()]
        if not batch:
            return
        batch.sort(key=lambda piece: len(piece.ids))
        start = time.perf_counter()
        for piece in batch:
            self.observe_wait(start - piece.arrived)
        options = batch[0].options
        try:
            results = self.generate([p.ids for p in batch], [p.new_tokens for p in batch], options.num_beams,
                                    options.length_penalty, options.n_best)
        except Exception as error:  # noqa: BLE001  (reported to the requests, never kills the worker)
            if len(batch) > 1:
                logger.warning("a batch of %d failed (%s): decoding its sentences one by one", len(batch), error)
                for piece in batch:
                    self._decode([piece])
                return
            logger.exception("decoding failed")
            self._deliver(batch[0], error=error)
            return
        self.batches += 1
        self.observe_batch(len(batch), len(batch) * max(len(p.ids) for p in batch), time.perf_counter() - start)
        for piece, result in zip(batch, results):
            self._deliver(piece, result=result)

    @staticmethod
    def _deliver(piece: Piece, result=None, error: BaseException | None = None) -> None:
        def settle():
            if piece.future.done():  # cancelled: the request went away
                return
            if error is not None:
                piece.future.set_exception(error)
            else:
                piece.future.set_result(result)

        try:
            piece.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is closed: nobody waits for the answer
            pass
