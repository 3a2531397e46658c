"""Atomic file writes: a reader never sees half a file, and no other file is touched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Text written to a new uniquely named temporary file and renamed: a reader never sees half a file, and no
    other file is touched."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~current_umask())  # mkstemp's file is private; the result is an ordinary file
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: dict) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


# Bytes per read when hashing a whole file: large reads keep the hash, not the system calls, the cost.
HASH_READ_BYTES = 1 << 20
# Whole-file hashes already computed by this process, by (path, device, inode, size, mtime, ctime): the data-cache
# key and the run record of one start hash a corpus once. ctime changes on every write (and cannot be set back, unlike
# mtime), so an edited file is hashed again.
_HASHED: dict[tuple, str] = {}


def content_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's whole content, read `HASH_READ_BYTES` at a time into one buffer (~1.3 GB/s where the CPU has
    SHA extensions, see benchmarks/hash_throughput.py); remembered for the life of the process while the file's
    size, modification and change times stay the same."""
    stat = os.stat(path)
    memo = (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if memo not in _HASHED:
        digest = hashlib.sha256()
        buffer = bytearray(HASH_READ_BYTES)
        view = memoryview(buffer)
        with open(path, "rb", buffering=0) as stream:
            while read := stream.readinto(buffer):
                digest.update(view[:read])
        _HASHED[memo] = digest.hexdigest()
    return _HASHED[memo]


def files_sha256(folder: str | os.PathLike, names) -> str | None:
    """SHA-256 over the names and contents of those of `names` that are files in `folder` (None when none is)."""
    digest, found = hashlib.sha256(), False
    for name in sorted(names):
        path = Path(folder) / name
        if path.is_file():
            found = True
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest() if found else None


def save_dataset_atomically(dataset, target: Path) -> None:
    """`dataset.save_to_disk` next to `target`, then renamed into place: a crash or a concurrent run never leaves half
    a cache (if another process finished first, its copy, of the same data, stays)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        dataset.save_to_disk(str(tmp))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is ordinary data
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "dataset_dict.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
