"""The server's in-process engine, loaded, warmed up and run in one thread of its own (issue #31).

torch's CPU ops run in OpenMP parallel regions, and GNU OpenMP gives every thread that starts one a team of helper
threads of its own, kept for the thread's life. When the server's main thread loaded the model (parallel ops) and the
batcher's thread then decoded, two teams existed: GNU OpenMP counts more managed threads than CPUs and stops letting
idle helpers spin-wait between parallel regions (`gomp_throttled_spin_count`), so every one of the thousands of
small regions of a beam search waits for helpers to be woken by the kernel. `generate` ran 1.45-1.61x slower there
than in a main thread (benchmarks/openmp_threads.py, BENCHMARKS.md). Here one thread does everything torch does for
the engine — loading, a warm-up decode, every batch — so there is one team, and the main thread (the event loop,
which only tokenizes) never starts one.

    engine = EngineThread(lambda: load_engine(folder, "transformers"))
    engine.generate(rows, limits, options)   # runs in the engine's thread; the caller waits for the answer

Everything but `generate` (the tokenizer and its lock, the length limits, `unsupported`, `name`) is the loaded
engine's own, read from any thread as before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from ...translation import DecodingOptions, TranslationEngine, plan

WARM_UP_TEXT = "Hello."


class EngineThread:
    """A `TranslationEngine` whose loading and `generate` calls run in one thread of its own (module docstring).
    The constructor returns once the engine is loaded and warmed up, and raises what loading raised."""

    def __init__(self, load: Callable[[], TranslationEngine], warm_up: bool = True):
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        loaded: Future = Future()
        self.thread = threading.Thread(target=self._run, args=(load, warm_up, loaded), name="translation-engine",
                                       daemon=True)
        self.thread.start()
        self.engine = loaded.result()  # the loading error, if any, raised here

    def __getattr__(self, name: str):  # tokenizer, tokenizer_lock, source_limit, new_token_limit, unsupported, ...
        if name == "engine":  # not loaded (yet): no recursion
            raise AttributeError(name)
        return getattr(self.engine, name)

    def generate(self, rows: list[list[int]], limits: list[int], options: DecodingOptions) -> list[list[str]]:
        answer: Future = Future()
        self.calls.put((answer, rows, limits, options))
        return answer.result()  # what generate returned or raised

    def close(self) -> None:
        self.calls.put(None)
        self.thread.join()

    def _run(self, load: Callable[[], TranslationEngine], warm_up: bool, loaded: Future) -> None:
        try:
            engine = load()
            if warm_up:  # the first decode's one-off costs (allocations, lazy initialisation) paid before serving
                work = plan(engine, [WARM_UP_TEXT], DecodingOptions())
                engine.generate(work.rows, work.limits, DecodingOptions())
        except BaseException as error:  # noqa: BLE001  (raised in the constructor's thread)
            loaded.set_exception(error)
            return
        loaded.set_result(engine)
        while (call := self.calls.get()) is not None:
            answer, rows, limits, options = call
            try:
                answer.set_result(engine.generate(rows, limits, options))
            except BaseException as error:  # noqa: BLE001  (the batcher's to handle, as a direct call's)
                answer.set_exception(error)
