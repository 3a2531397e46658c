"""Dynamic batching: sentences of concurrent requests queued, decoded together in a worker thread, each answer
routed back to its request.

A request's pieces (`submit`) wait in one queue. A free worker takes the oldest waiting piece and waits for company:
until no new piece has come for `max_wait` seconds, at most `WAIT_CAP` × `max_wait` after the oldest piece came
(no wait when the queue already holds a batch's worth of tokens). Waiting for a pause rather than a fixed time keeps
a burst together: when a batch's answers go out, its clients send their next requests over some milliseconds, and a
fixed wait would cut them into a batch of the first few and one of the rest. The worker then fills the batch with
the waiting pieces of the same decoding options closest in length to the oldest one, as long as the padded batch
stays within `max_batch_tokens` (rows × longest row) and `max_batch_size` rows, and takes no more than its share
when other workers are free too. The oldest piece is always in the next batch, so nothing waits forever.

One worker thread per `generate` function (one per engine replica, `workers.py`): a replica only ever runs in its
own thread, never two `generate` calls at once on one model.

A piece whose request went away (the client disconnected, `cancel`) is dropped before it reaches a batch. A batch
that fails is decoded again piece by piece, so only the piece that fails gets the error; a `BatchFailed` error (a
worker process that died or missed its deadline) fails the whole batch at once.

A worker thread never dies silently: whatever ends it (a BaseException out of `generate`, a bug here) marks the
batcher broken (`problem()`, which `/health` reports with a 503), fails the batch it was decoding and every queued
piece, and makes `submit` refuse new work (`Broken`), so no request waits for a thread that is gone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...translation import DecodingOptions

logger = logging.getLogger(__name__)

WAIT_CAP = 8  # the oldest piece waits at most this many `max_wait`s for company while pieces keep coming


class QueueFull(Exception):
    """The queue holds `max_queue` pieces: the request is refused (503 with Retry-After)."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new work."""


class Broken(Exception):
    """A worker thread has stopped: the batcher takes no work (see the module docstring)."""


class BatchFailed(Exception):
    """A failure of a whole batch, not of one of its sentences (a worker process died or missed its deadline): the
    batch is not decoded again piece by piece."""


@dataclass(eq=False)
class Piece:
    ids: list[int]
    limit: int  # new tokens at most
    options: DecodingOptions  # pieces share a batch only when they share these
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False


class Batcher:
    """See the module docstring. `generate(rows, limits, options)` is the engine's (`translation.TranslationEngine`),
    or a list of them (one per replica, each run by its own worker thread); `observe_batch(rows, padded_tokens,
    seconds)` and `observe_wait(seconds)` report to the metrics."""

    def __init__(self, generate: Callable | list[Callable], max_batch_tokens: int = 4096, max_batch_size: int = 64,
                 max_wait: float = 0.005, max_queue: int = 1024, observe_batch: Callable | None = None,
                 observe_wait: Callable | None = None):
        generators = list(generate) if isinstance(generate, (list, tuple)) else [generate]
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.max_wait, self.max_queue = max_wait, max_queue
        self.observe_batch = observe_batch or (lambda rows, tokens, seconds: None)
        self.observe_wait = observe_wait or (lambda seconds: None)
        self.pending: list[Piece] = []
        self.condition = threading.Condition()
        self.closing = False  # no new work
        self.draining = False  # no more waiting for company: the server is stopping
        self.batches = 0
        self.idle = 0  # workers waiting for a batch
        self.broken: str | None = None  # why a worker thread stopped
        self.in_flight: dict[str, tuple[list[Piece], float]] = {}  # thread name: (its batch, when it began)
        self.threads = [threading.Thread(target=self._run, args=(generate,), name=f"translation-worker-{number}",
                                         daemon=True) for number, generate in enumerate(generators)]
        for thread in self.threads:
            thread.start()

    # -- the event loop's side -----------------------------------------------------------------------------------

    def queued(self) -> int:
        with self.condition:
            return len(self.pending)

    def submit(self, rows: list[list[int]], limits: list[int], options: DecodingOptions) -> list[Piece]:
        """Queue the pieces of one request (all or none); each `piece.future` gets its `n_best` translations."""
        loop = asyncio.get_running_loop()
        pieces = [Piece(ids, limit, options, loop.create_future(), loop) for ids, limit in zip(rows, limits)]
        with self.condition:
            if self.broken:
                raise Broken(self.broken)
            if self.closing:
                raise ShuttingDown("the server is shutting down")
            if len(self.pending) + len(pieces) > self.max_queue:
                raise QueueFull(f"the queue is full ({len(self.pending)} sentences waiting)")
            self.pending.extend(pieces)
            self.condition.notify()
        return pieces

    def problem(self) -> str | None:
        """Why the batcher takes no work (a worker thread stopped), or None."""
        with self.condition:
            return self.broken

    def busy(self) -> dict[str, float]:
        """Each decoding worker thread's name: how long its batch has been running, in seconds."""
        now = time.perf_counter()
        with self.condition:
            return {name: now - start for name, (_, start) in self.in_flight.items()}

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
            self.condition.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Take no new work, decode what is queued, stop the worker."""
        with self.condition:
            self.closing = True
            self.condition.notify_all()
        for thread in self.threads:
            thread.join(timeout)

    # -- the worker thread -----------------------------------------------------------------------------------------

    def _run(self, generate: Callable) -> None:
        name = threading.current_thread().name
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                with self.condition:
                    self.in_flight[name] = (batch, time.perf_counter())
                self._decode(batch, generate)
                with self.condition:
                    self.in_flight.pop(name, None)
        except BaseException as error:  # noqa: BLE001  (reported: /health, the queued requests, the log)
            self._stopped(name, error)

    def _stopped(self, name: str, error: BaseException) -> None:
        """A worker thread is ending on `error`: no request may wait for it."""
        logger.critical("the batching thread %s stopped: %r; the server takes no more requests", name, error,
                        exc_info=error)
        failure = Broken(f"the batching thread {name} stopped ({type(error).__name__}: {error}); the server "
                         "must be restarted")
        with self.condition:
            self.broken = str(failure)
            victims = [*self.pending, *(p for batch, _ in self.in_flight.values() for p in batch)]
            self.pending, self.in_flight = [], {}
            self.condition.notify_all()
        for piece in victims:
            self._deliver(piece, error=failure)

    def _next_batch(self) -> list[Piece] | None:
        with self.condition:
            self.idle += 1
            try:
                return self._wait_for_batch()
            finally:
                self.idle -= 1

    def _wait_for_batch(self) -> list[Piece] | None:
        while not self.pending:
            if self.closing:
                return None
            self.condition.wait()
        while not (self.closing or self.draining or self._enough_waiting()):
            # until a pause of max_wait in the arrivals, at most WAIT_CAP × max_wait after the oldest piece
            deadline = min(self.pending[-1].arrived + self.max_wait,
                           self.pending[0].arrived + WAIT_CAP * self.max_wait)
            if time.perf_counter() >= deadline:
                break
            self.condition.wait(max(deadline - time.perf_counter(), 0.0))
            if not self.pending:  # all cancelled meanwhile
                return []
        batch = self._choose()
        chosen = set(map(id, batch))
        self.pending = [piece for piece in self.pending if id(piece) not in chosen]
        if self.pending:
            self.condition.notify()  # another free worker may take the rest
        return batch

    def _enough_waiting(self) -> bool:
        options = self.pending[0].options
        same = [piece for piece in self.pending if piece.options == options]
        return len(same) >= self.max_batch_size or sum(len(p.ids) for p in same) >= self.max_batch_tokens

    def _choose(self) -> list[Piece]:
        """The oldest piece and the waiting pieces of its options closest to it in length, within the limits and
        this worker's share of them when other workers are free too."""
        oldest = self.pending[0]
        candidates = sorted((p for p in self.pending if p.options == oldest.options),
                            key=lambda p: (abs(len(p.ids) - len(oldest.ids)), p.arrived))
        size = min(self.max_batch_size, math.ceil(len(candidates) / max(self.idle, 1)))
        batch, longest = [], 0
        for piece in candidates:
            width = max(longest, len(piece.ids))
            if batch and ((len(batch) + 1) * width > self.max_batch_tokens or len(batch) >= size):
                continue
            batch.append(piece)
            longest = width
        return batch

    def _decode(self, batch: list[Piece], generate: Callable) -> None:
        batch = [piece for piece in batch if not piece.cancelled and not piece.future.done()]
        if not batch:
            return
        batch.sort(key=lambda piece: len(piece.ids))
        start = time.perf_counter()
        for piece in batch:
            self.observe_wait(start - piece.arrived)
        options = batch[0].options
        try:
            results = generate([p.ids for p in batch], [p.limit for p in batch], options)
        except Exception as error:  # noqa: BLE001  (reported to the requests, never kills the worker)
            if isinstance(error, BatchFailed):
                logger.error("a batch of %d failed: %s", len(batch), error)
                for piece in batch:
                    self._deliver(piece, error=error)
                return
            if len(batch) > 1:
                logger.warning("a batch of %d failed (%s): decoding its sentences one by one", len(batch), error)
                for piece in batch:
                    self._decode([piece], generate)
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
