"""The errors the commands turn into one line of text (see `vanilla_transformer.cli.main.run_command`).

A usage error is the command line's fault and exits with status 2 (argparse's convention); everything else a user
can run into — a bad data file, a missing model, a full disk — exits with status 1. Both are ordinary exceptions
for the Python API: `UsageError` is a `ValueError`, `DiskFullError` an `OSError`.
"""

from __future__ import annotations

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
