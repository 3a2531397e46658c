"""How fast a data file's identity is computed: the whole-content SHA-256 of `base.files.content_sha256` (what the
data-cache keys, the cache entries' checksums and `--resume`'s run record use) against other hashes, on a generated
file of `--megabytes` MB (read from the page cache after a first pass; the first, cold pass is timed too).

    python benchmarks/hash_throughput.py --megabytes 1024 --output benchmarks/hash_throughput.json

A 4.5 M-pair corpus is ~2.8 GB: its identity costs 2.8 GB / (the MB/s below) once per start (the cache key and the run
record share it, see `content_sha256`'s memo).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
import zlib
from pathlib import Path


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    extensions = [f for f in ("sha_ni", "avx2", "avx512f", "vpclmulqdq") if f in flags]
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs ({' '.join(extensions)})"


def generate(path: Path, megabytes: int) -> None:
    """Text-like lines (a TSV of pairs), written 1 MB at a time."""
    block = "".join(f"frase número {i} de la prueba\tsentence number {i} of the test\n" for i in range(20_000))
    block = block.encode()[: 1 << 20]
    with open(path, "wb") as stream:
        for _ in range(megabytes):
            stream.write(block)


def hashed_with(new, path: Path, read_bytes: int) -> None:
    digest = new()
    buffer = bytearray(read_bytes)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while read := stream.readinto(buffer):
            digest.update(view[:read])
    digest.digest()


class Crc32:
    def __init__(self):
        self.value = 0

    def update(self, data):
        self.value = zlib.crc32(data, self.value)

    def digest(self):
        return self.value


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from vanilla_transformer.base import files

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corpus.tsv"
        generate(path, args.megabytes)
        size_mb = path.stat().st_size / 1e6
        os.posix_fadvise(os.open(path, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)  # best effort: a cold first read
        cold = timed(lambda: files.content_sha256(path))
        results = {"cpu": cpu_name(), "load_average_before": [round(x, 2) for x in os.getloadavg()],
                   "file_mb": round(size_mb),
                   "content_sha256_first_pass_mb_s": round(size_mb / cold)}
        candidates = {
            "content_sha256 (1 MiB reads, ours)": lambda: (files._HASHED.clear(), files.content_sha256(path)),
            "sha256, 8 MiB reads": lambda: hashed_with(hashlib.sha256, path, 8 << 20),
            "sha256, 64 KiB reads": lambda: hashed_with(hashlib.sha256, path, 64 << 10),
            "blake2b, 8 MiB reads": lambda: hashed_with(hashlib.blake2b, path, 8 << 20),
            "sha1, 8 MiB reads": lambda: hashed_with(hashlib.sha1, path, 8 << 20),
            "crc32, 8 MiB reads": lambda: hashed_with(Crc32, path, 8 << 20),
            "memo hit (same size, mtime, ctime)": lambda: files.content_sha256(path),
        }
        for name, function in candidates.items():
            best = min(timed(function) for _ in range(args.repeats))
            results[f"{name} mb_s"] = round(size_mb / best) if best > 0 else None
            results[f"{name} seconds"] = round(best, 4)
        speed = results["content_sha256 (1 MiB reads, ours) mb_s"]
        results["seconds_for_2.8_GB_corpus"] = round(2800 / speed, 2)
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
