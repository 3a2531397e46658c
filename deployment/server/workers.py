"""Engine replicas in worker processes (`serve --workers N`): N batches decoded at once, each by its own model.

On a CPU a small model's batch does not keep several cores busy, and clients answered together come back together,
so one engine alternates between decoding and waiting for the next batch to form. With `--workers N` each worker is
a process holding its own copy of the engine (loaded from the same folder, with the CPU threads shared out); the
batcher gives each worker its own batches, so one decodes while the other's batch forms. The demo model on 2 cores
(BENCHMARKS.md): 16 clients got 11.5 sentences/s from one engine with two threads, 22.1 from two workers with one.
No model is ever used by two `generate` calls at once: a replica decodes one batch at a time, in its own process.

The server process keeps its engine for the tokenizer, the length limits and the model card; only `generate` runs in
the workers. A worker that dies (killed, out of memory) fails the batch it was decoding — those requests get a 500,
no other request is touched — and is started again for the next batch.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading

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


class EngineProcess:
    """One replica: `generate(rows, limits, options)` as the engine's, in a process."""

    def __init__(self, model_dir: str, engine: str, device: str | None, threads: int):
        self.arguments = (model_dir, engine, device, threads)
        self.lock = threading.Lock()  # one call at a time (the batcher gives each worker thread its own replica)
        self.process = self.connection = None
        self.start()

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads and a model
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, *self.arguments), daemon=True,
                                       name="translation-replica")
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        """Raises ValueError with the worker's own message when it cannot load the model."""
        if not self.connection.poll(START_SECONDS):
            raise RuntimeError(f"a worker did not load the model within {START_SECONDS} s")
        status, message = self._receive()
        if status != "ready":
            raise ValueError(message)

    def _receive(self):
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"the worker process stopped (exit code {self.process.exitcode})") from None

    def generate(self, *call):
        with self.lock:
            if not self.process.is_alive():
                logger.warning("a worker process had stopped (exit code %s): starting it again",
                               self.process.exitcode)
                self.start()
                self.wait_ready()
            try:
                self.connection.send(call)
            except (BrokenPipeError, OSError):
                raise RuntimeError(f"the worker process stopped (exit code {self.process.exitcode})") from None
            status, result = self._receive()
            if status != "ok":
                raise RuntimeError(result)
            return result

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


def start_replicas(model_dir: str, engine: str, device: str | None, count: int, threads: int) -> list[EngineProcess]:
    """`count` replicas, loaded in parallel; ValueError/RuntimeError (and none left running) when one cannot load."""
    replicas = []
    try:
        for _ in range(count):
            replicas.append(EngineProcess(model_dir, engine, device, threads))
        for replica in replicas:
            replica.wait_ready()
    except BaseException:
        for replica in replicas:
            replica.close(timeout=5)
        raise
    return replicas
