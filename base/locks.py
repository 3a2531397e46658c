"""One writer per output folder: a lock held for the whole run.

`OutputLock(folder).acquire()` takes an exclusive `fcntl.flock` on `<folder>/.vanilla-transformer.lock` without
waiting and writes the holder into it (process id, host, start time, command). A second run into the same folder
finds the lock taken and refuses (`OutputFolderBusy`, naming the holder from the file). `release()` removes the file
and drops the lock; a process that dies in any way (SIGKILL included) loses the lock with its file descriptor, so a
lock file left behind by a killed run is not taken (flock does not see it as held): the next run takes it over and
warns, naming the dead holder.

Choices:

* flock, not a file that merely exists (an O_EXCL lock file would stay behind after a crash and need guesses about
  whether its pid still runs — on another host, impossible to know), and not POSIX `fcntl` record locks (released
  when *any* descriptor of the file closes in the process).
* Shared file systems: Linux's NFS client (v3 with lockd, v4 natively) implements flock with the server's byte-range
  locks, so two nodes writing one NFS folder exclude each other; Lustre does with the `flock` mount option, and a
  mount with `noflock` (or `localflock`, which only locks within one node) refuses the call or only locks per node.
  Where the file system refuses flock (ENOLCK, EOPNOTSUPP, ENOSYS), the run goes on with a warning saying that
  it could not be locked: a lock that cannot be had must not stop training on such a mount.
* The lock file is unlinked on release while still locked, and a taker checks that the file it locked is still
  the one at the path (same inode), so a run never holds a lock on a file already removed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_FILE = ".vanilla-transformer.lock"
# flock refused by the file system (not: held by someone else)
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class OutputFolderBusy(RuntimeError):
    """Another process writes into the output folder; the message names it."""


def describe(holder: dict) -> str:
    """'process 1234 on host (since 12:00:00, `vanilla-transformer train ...`)' from the lock file's content."""
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    command = holder.get("command")
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since {when}"
            + (f", `{command}`" if command else "") + ")")


def read_holder(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class OutputLock:
    """The lock of one output folder (see the module docstring). Usable as a context manager."""

    def __init__(self, folder: str | os.PathLike, flag: str = "--output_dir"):
        self.folder, self.flag = Path(folder), flag
        self.path = self.folder / LOCK_FILE
        self.descriptor: int | None = None

    def acquire(self) -> "OutputLock":
        """Take the lock or raise `OutputFolderBusy` naming the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(descriptor)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = read_holder(self.path)
                    raise OutputFolderBusy(
                        f"{self.flag} {self.folder} is in use by another run: {describe(holder)}; wait for it to end, "
                        f"stop it, or give another {self.flag}") from None
                if error.errno in UNSUPPORTED:
                    logger.warning("%s %s: the file system does not support locks (%s), so another run writing "
                                   "into the same folder would not be noticed", self.flag, self.folder,
                                   os.strerror(error.errno))
                    return self
                raise
            try:
                same = os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)  # locked a file its holder removed meanwhile: take the new one
        self.descriptor = descriptor
        previous = read_holder(self.path)
        if previous:
            logger.warning("%s %s: taking over the lock left by %s, which is no longer running", self.flag,
                           self.folder, describe(previous))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(sys.argv)}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode("utf-8"), 0)
        os.fsync(descriptor)
        return self

    def release(self) -> None:
        if self.descriptor is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: nobody takes a lock on a removed file
        finally:
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
