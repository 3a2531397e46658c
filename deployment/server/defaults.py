"""`serve`'s defaults, chosen at start and printed with the reason: the engine (`--engine auto`) and the number of
worker processes (`--workers auto`).

**Engine.** CTranslate2 decodes the same model 2-3x faster than `generate` on a CPU (BENCHMARKS.md), so `auto`
takes it whenever it can: a CTranslate2 export is served as it is; a model folder is converted once into a cache
(`ctranslate2_cache`: float32, keyed by the weights, config and tokenizer, so a restart loads the export at once).
It keeps transformers, saying why, when CTranslate2 is not installed, when the default decoding options set a `seed`
(CTranslate2's sampling cannot be seeded), when the device is one CTranslate2 cannot use (MPS; CUDA where its build
has none), and when the conversion fails (an activation it lacks, an unwritable cache: the error is the reason).

**Workers.** On a CPU a small model's batch does not keep several cores busy, and clients answered together come
back together, so one engine alternates between decoding and waiting for the next batch (workers.py); N processes
with the cores shared out decode while other batches form. `auto` gives each worker `ceil(weights /
WEIGHT_BYTES_PER_THREAD)` CPU threads (a bigger model's matrices keep more cores busy), and as many workers as the
CPU budget holds, at most `MAX_AUTO_WORKERS` and as many as half the available memory holds (each worker holds a copy
of the weights and a runtime). The CPU budget is `OMP_NUM_THREADS` when set, else the CPUs this process may run on
(`os.sched_getaffinity`: a container's or `taskset`'s share, not the machine's). On a GPU, one engine: batching, not
processes, is what fills a GPU. One worker is the engine in the server process (no worker process).

    choose_workers(cpus=1, weights=24e6)   -> 1 worker (the engine in the server process), 1 thread
    choose_workers(cpus=2, weights=24e6)   -> 2 workers, 1 thread each   (the make-demo model on 2 cores)
    choose_workers(cpus=16, weights=24e6)  -> 8 workers, 2 threads each
    choose_workers(cpus=16, weights=2e9)   -> 4 workers, 4 threads each  (~500 M parameters: 4 threads a worker)
    choose_workers(cpus=16, weights=24e6, models=2) -> 8 workers of 1 thread for each model (8 CPUs each)

Several models in one server (`serve A B`) share the CPUs and the memory: each is given `cpus // models` of them.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ...translation import DecodingOptions

WEIGHT_BYTES_PER_THREAD = 512 * 2**20  # a worker gets one CPU thread per this much of float32 weights (~134 M params)
MAX_AUTO_WORKERS = 8  # beyond, concurrent batches only get smaller
RUNTIME_BYTES = 512 * 2**20  # what a worker process holds besides the weights (Python, torch, buffers)


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "transformers" or "ctranslate2"
    folder: str  # what `load_engine` loads: the model folder, or a CTranslate2 export (given or cached)
    reason: str


@dataclass(frozen=True)
class WorkerChoice:
    workers: int  # 1: the engine in the server process
    threads: int  # CPU threads of each worker (0: the engine's own default, on a GPU)
    reason: str


# ---------------------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------------------


def is_ctranslate2_export(folder: str | os.PathLike) -> bool:
    from ...translation.folders import CTRANSLATE2_MARKERS

    return all((Path(folder) / name).is_file() for name in CTRANSLATE2_MARKERS)


def ctranslate2_unusable(device: str | None, decoding: DecodingOptions) -> str | None:
    """Why CTranslate2 cannot serve a model folder here with these default options, or None."""
    if decoding.seed is not None:
        return "the default decoding options set a seed, and CTranslate2's sampling cannot be seeded"
    try:
        import ctranslate2
    except ImportError:
        return 'CTranslate2 is not installed (pip install "vanilla-transformer[ctranslate2]")'
    kind = (device or "").partition(":")[0]
    if kind not in ("", "cpu", "cuda"):
        return f"--device {device}: CTranslate2 runs on CPUs and CUDA GPUs only"
    if kind == "cuda" or (not kind and cuda_available()):
        if ctranslate2.get_cuda_device_count() == 0:
            return "this CTranslate2 build sees no CUDA GPU, and transformers does"
    return None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_engine(model_dir: str, requested: str = "auto", device: str | None = None,
                  decoding: DecodingOptions | None = None, cache_dir: str | None = None) -> EngineChoice:
    """The engine for `serve --engine requested` (see the module docstring); converts on a cache miss."""
    if requested != "auto":
        return EngineChoice(requested, model_dir, f"--engine {requested}")
    if is_ctranslate2_export(model_dir):
        return EngineChoice("ctranslate2", model_dir, "the folder is a CTranslate2 export, served as it is")
    unusable = ctranslate2_unusable(device, decoding or DecodingOptions())
    if unusable:
        return EngineChoice("transformers", model_dir, unusable)
    from ..ctranslate2_cache import cached_export

    start = time.perf_counter()
    try:
        folder, converted = in_passing_thread(cached_export, model_dir, cache_dir)
    except Exception as error:  # noqa: BLE001  (any failure: serve with transformers, saying why)
        return EngineChoice("transformers", model_dir, f"CTranslate2 could not convert the model: {one_line(error)}")
    if converted:
        return EngineChoice("ctranslate2", str(folder), f"CTranslate2 is installed; the model was converted in "
                                                        f"{time.perf_counter() - start:.1f} s into {folder}")
    return EngineChoice("ctranslate2", str(folder), f"CTranslate2 is installed; the model's conversion was found in "
                                                    f"{folder}")


def in_passing_thread(function, *args):
    """`function(*args)` in a thread that ends before this returns. The conversion loads the model with torch, whose
    parallel ops start an OpenMP thread team in the thread that runs them; a team left in the server's main thread
    slows `generate` in the batcher's thread by ~1.5x (issue #31, engine_thread.py), one in a thread that has ended
    is gone with it."""
    with ThreadPoolExecutor(1, thread_name_prefix="conversion") as pool:
        return pool.submit(function, *args).result()


def one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


# ---------------------------------------------------------------------------------------------------------------------
# The workers
# ---------------------------------------------------------------------------------------------------------------------


def cpu_budget() -> tuple[int, str]:
    """(CPU threads the server may use, where that number comes from, in words)."""
    variable = os.environ.get("OMP_NUM_THREADS", "").strip()
    if variable.isdigit() and int(variable) > 0:
        return int(variable), f"OMP_NUM_THREADS={int(variable)}"
    cpus = len(os.sched_getaffinity(0))
    return cpus, f"{cpus} CPU{'s' if cpus > 1 else ''} available to this process"


def weight_bytes(folder: str | os.PathLike) -> int:
    """The size of a model folder's weights (model.safetensors or its shards), or of an export's model.bin."""
    path = Path(folder)
    files = [path / "model.bin", path / "model.safetensors", *path.glob("model-*-of-*.safetensors")]
    return sum(file.stat().st_size for file in files if file.is_file())


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def choose_workers(cpus: int, weights: int, memory: int | None = None, gpu: bool = False,
                   budget: str | None = None, models: int = 1) -> WorkerChoice:
    """`--workers auto` for a CPU budget of `cpus` threads (`budget`: where it comes from, in words) and `weights`
    bytes of weights, within `memory` bytes available (module docstring). With several `models` in one server, each
    gets its share of the CPUs and of the memory."""
    if gpu:
        return WorkerChoice(1, 0, "a GPU: one engine, which batching keeps busy")
    if models > 1:
        budget = f"{budget or f'{cpus} CPUs'} shared by {models} models: {max(1, cpus // models)} each"
        cpus = max(1, cpus // models)
        memory = None if memory is None else memory // models
    per_worker = max(1, min(cpus, math.ceil(weights / WEIGHT_BYTES_PER_THREAD)))
    workers = max(1, min(cpus // per_worker, MAX_AUTO_WORKERS))
    why = (f"{budget or f'{cpus} CPUs'}, {weights / 2**20:,.1f} MiB of weights: {per_worker} thread"
           f"{'s' if per_worker > 1 else ''} a worker, one per {WEIGHT_BYTES_PER_THREAD // 2**20} MiB or part of it")
    if cpus // per_worker > MAX_AUTO_WORKERS:
        why += f", at most {MAX_AUTO_WORKERS} workers"
    if memory is not None:
        fits = max(1, int(memory / 2 // (weights + RUNTIME_BYTES)))
        if fits < workers:
            workers = fits
            why += f", {workers} {'copies fit' if workers > 1 else 'copy fits'} in half the available memory " \
                   f"({memory / 2**30:.1f} GiB)"
    return WorkerChoice(workers, max(1, cpus // workers), why)


def auto_workers(folder: str, engine: str, device: str | None, models: int = 1) -> WorkerChoice:
    """`choose_workers` for this machine and `folder` (what the chosen engine loads), one of `models` served."""
    if engine == "ctranslate2":
        gpu = device is not None and device.startswith("cuda") or device is None and ctranslate2_cuda()
    else:
        gpu = device is not None and not device.startswith("cpu") or device is None and cuda_available()
    cpus, budget = cpu_budget()
    return choose_workers(cpus, weight_bytes(folder), available_memory(), gpu, budget, models)


def ctranslate2_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0
