"""The errors the commands turn into one line of text (see `cli.run_command`).

A usage error is the command line's fault and exits with status 2 (argparse's convention); everything else a user
can run into — a bad data file, a missing model, a full disk — exits with status 1. Both are ordinary exceptions
for the Python API: `UsageError` is a `ValueError`, `DiskFullError` an `OSError`. `CommandParser` is the argparse
parser of every command (one-line usage errors, no abbreviated flags).
"""

from __future__ import annotations

import argparse
import errno
import shutil
from pathlib import Path


class UsageError(ValueError):
    """The arguments ask for something that cannot be done; the message names them and what to change."""


class DiskFullError(OSError):
    """A write ran out of space; the message names the folder and what was kept."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# torch's zip writer reports a short write as "[enforce fail at inline_container.cc:...] . unexpected pos ...";
# safetensors and Python report ENOSPC as "No space left on device".
_SHORT_WRITE_MARKERS = ("No space left on device", "unexpected pos", "file write failed", "StorageFull")
# Below this much free space a failed write is taken for a full disk.
_NEARLY_FULL_BYTES = 64 * 1024 * 1024


def is_disk_full(error: BaseException, folder: str | Path) -> bool:
    """Whether `error`, raised while writing into `folder`, means the disk is full."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not any(marker in str(error) for marker in _SHORT_WRITE_MARKERS):
        return False
    if "No space left" in str(error) or "StorageFull" in str(error):
        return True
    try:  # a short write for another reason (a vanished file system) must not be reported as a full disk
        existing = next(p for p in (Path(folder), *Path(folder).parents) if p.exists())
        return shutil.disk_usage(existing).free < _NEARLY_FULL_BYTES
    except (OSError, StopIteration):
        return False


class OneLineErrors:
    """For an argparse parser: a usage error is one line `PROG: error: MESSAGE` (not the whole usage block, which
    `--help` shows) and exit status 2."""

    def error(self, message: str):
        text = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {text} (see `{self.prog} --help`)\n")


class CommandParser(OneLineErrors, argparse.ArgumentParser):
    """The parser of every command: one-line usage errors, and flags spelt out in full (no prefix matching, so a
    typo such as `--max_step` is an error rather than silently another flag)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
