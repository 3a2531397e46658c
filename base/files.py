"""Atomic file writes: a reader never sees half a file, and no other file is touched."""

from __future__ import annotations

import hashlib
import json
import os
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


def head_tail_sha256(path: str | os.PathLike, sample_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's first and last `sample_bytes` (the whole file when smaller): recognises a huge file
    without reading it all (with its size, what data-file identities are made of)."""
    size = os.stat(path).st_size
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        digest.update(stream.read(sample_bytes))
        if size > sample_bytes:
            stream.seek(max(sample_bytes, size - sample_bytes))
            digest.update(stream.read(sample_bytes))
    return digest.hexdigest()


def files_sha256(folder: str | os.PathLike, names) -> str | None:
    """SHA-256 over the names and contents of those of `names` that are files in `folder` (None when none is)."""
    digest, found = hashlib.sha256(), False
    for name in sorted(names):
        path = Path(folder) / name
        if path.is_file():
            found = True
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest() if found else None
