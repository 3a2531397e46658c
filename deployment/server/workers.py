"""Engine replicas in worker processes (`serve --workers N`): N batches decoded at once, each by its own model.

On a CPU a small model's batch does not keep several cores busy, and clients answered together come back together,
so one engine alternates between decoding and waiting for the next batch to form. With `--workers N` each worker is
a process holding its own copy of the engine (loaded from the same folder, with the CPU threads shared out); the
batcher gives each worker its own batches, so one decodes while the other's batch forms. The demo model on 2 cores
(BENCHMARKS.md): 16 clients got 11.5 sentences/s from one engine with two threads, 22.1 from two workers with one.
No model is ever used by two `generate` calls at once: a replica decodes one batch at a time, in its own process.

The server process keeps its engine for the tokenizer, the length limits and the model card; only `generate` runs in
the workers. A worker that dies (killed, out of memory) fails the batch it was decoding — those requests get a 503,
no other request is touched — and is started again for the next batch. A worker that stops answering (stopped with
SIGSTOP, stuck in a driver) is given a deadline per batch (`Settings.batch_deadline`: `--batch_timeout` seconds,
times 1 + rows × longest limit / `--max_batch_tokens`): past it the worker is killed and started again at once, and
its batch fails with 503. `status()` is what `/health` shows of each worker meanwhile.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable

from .batching import BatchFailed

logger = logging.getLogger(__name__)

START_SECONDS = 600  # loading a model: a hang guard, not a timing judgment


def _serve(connection, model_dir: str, engine: str, device: str | None, threads: int) -> None:
    """The worker process: load the engine, then answer `generate` calls until told to stop (None) or the server goes
    away (end of file on the pipe)."""
    import signal

    import torch
    import transformers

    from ..engines import load_engine

    # Ctrl-C in a terminal, or systemd's stop, signals the whole process group: the server finishes the requests in
    # flight and then closes its workers, so a worker must not die of the signal first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    transformers.utils.logging.disable_progress_bar()  # the server's log has no "Loading weights" bar per worker
    torch.set_num_threads(threads)
    try:
        replica = load_engine(model_dir, engine, device, threads=threads)
    except Exception as error:  # noqa: BLE001  (sent to the server, which reports it before binding)
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", None))
    while True:
        try:
            call = connection.recv()
        except EOFError:  # the server went away
            return
        if call is None:
            return
        try:
            connection.send(("ok", replica.generate(*call)))
        except Exception as error:  # noqa: BLE001  (the batch's error, reported to its requests)
            connection.send(("error", f"{type(error).__name__}: {error}"))


class WorkerFailed(BatchFailed, RuntimeError):
    """A worker process died or missed its batch's deadline: its whole batch fails (503), the worker restarts."""


class EngineProcess:
    """One replica: `generate(rows, limits, options)` as the engine's, in a process. `deadline(rows, longest limit)`:
    the seconds a batch may take (None: no deadline)."""

    def __init__(self, model_dir: str, engine: str, device: str | None, threads: int,
                 deadline: Callable[[int, int], float] | None = None):
        self.arguments = (model_dir, engine, device, threads)
        self.deadline = deadline
        self.lock = threading.Lock()  # one call at a time (the batcher gives each worker thread its own replica)
        self.process = self.connection = None
        self.ready = False
        self.batch: tuple[float, float] | None = None  # (when the batch began, its deadline in seconds)
        self.restarts = 0
        self.start()

    def status(self) -> dict:
        """What `/health` shows: the pid, the state (starting, ready, decoding, stopped), a batch's time and
        deadline, and how many times the worker was started again."""
        process, batch = self.process, self.batch
        state = "stopped" if not process.is_alive() else "decoding" if batch else "ready" if self.ready else "starting"
        answer = {"pid": process.pid, "state": state, "restarts": self.restarts}
        if batch:
            answer.update(seconds=round(time.monotonic() - batch[0], 3), deadline_s=round(batch[1], 3))
        return answer

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads and a model
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, *self.arguments), daemon=True,
                                       name="translation-replica")
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        """Raises ValueError with the worker's own message when it cannot load the model."""
        if self.ready:
            return
        if not self.connection.poll(START_SECONDS):
            raise RuntimeError(f"a worker did not load the model within {START_SECONDS} s")
        status, message = self._receive()
        if status != "ready":
            raise ValueError(message)
        self.ready = True

    def _receive(self):
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise WorkerFailed(f"the worker process stopped (exit code {self.process.exitcode})") from None

    def generate(self, rows, limits, options):
        with self.lock:
            if not self.process.is_alive():
                logger.warning("a worker process had stopped (exit code %s): starting it again",
                               self.process.exitcode)
                self.restart()
            self.wait_ready()
            deadline = self.deadline(len(rows), max(limits)) if self.deadline and rows else None
            self.batch = (time.monotonic(), deadline or 0.0)
            try:
                try:
                    self.connection.send((rows, limits, options))
                except (BrokenPipeError, OSError):
                    self.process.join(5)
                    failure = WorkerFailed(f"the worker process stopped (exit code {self.process.exitcode})")
                    self.restart()
                    raise failure from None
                if deadline is not None and not self.connection.poll(deadline):
                    pid = self.process.pid
                    logger.error("worker process %s did not answer a batch of %d within %.1f s: killed, starting "
                                 "it again", pid, len(rows), deadline)
                    self.restart()
                    raise WorkerFailed(f"the worker process {pid} did not answer within {deadline:.1f} s (serve "
                                       "--batch_timeout): it was stopped and is starting again")
                try:
                    status, result = self._receive()
                except WorkerFailed:
                    self.restart()  # now, not at the next batch: /health shows it starting, then ready
                    raise
            finally:
                self.batch = None
            if status != "ok":
                raise RuntimeError(result)
            return result

    def restart(self) -> None:
        """Kill the process (if it still runs, stopped or not) and start a new one; it loads in the background."""
        if self.process.is_alive():
            self.process.kill()  # SIGKILL ends a stopped process too
        self.process.join(30)
        self.connection.close()
        self.ready = False
        self.restarts += 1
        self.start()
        threading.Thread(target=self._load, name="translation-replica-start", daemon=True).start()

    def _load(self) -> None:
        """Wait for a restarted worker to load (so that `/health` sees it ready without waiting for a batch)."""
        with self.lock:
            try:
                self.wait_ready()
            except (ValueError, RuntimeError) as error:
                logger.error("a worker process could not start again: %s", error)

    def close(self, timeout: float = 30) -> None:
        with self.lock:
            try:
                self.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self.connection.close()


def start_replicas(model_dir: str, engine: str, device: str | None, count: int, threads: int,
                   deadline: Callable[[int, int], float] | None = None) -> list[EngineProcess]:
    """`count` replicas, loaded in parallel; ValueError/RuntimeError (and none left running) when one cannot load."""
    replicas = []
    try:
        for _ in range(count):
            replicas.append(EngineProcess(model_dir, engine, device, threads, deadline))
        for replica in replicas:
            replica.wait_ready()
    except BaseException:
        for replica in replicas:
            replica.close(timeout=5)
        raise
    return replicas
