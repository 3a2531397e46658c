"""This process's memory, for the log lines that say where the memory went (data ready, first update)."""

from __future__ import annotations

from pathlib import Path


def memory_mb() -> dict[str, float]:
    """This process's memory from /proc/self/status, in MB: ``peak`` resident (VmHWM: unlike getrusage's ru_maxrss,
    not inherited from the parent across fork and exec), and now ``anonymous`` (its own) and ``file`` (pages of
    files it maps, such as the memory-mapped data cache: shared and reclaimable). Empty where /proc is missing."""
    names = {"VmHWM:": "peak", "RssAnon:": "anonymous", "RssFile:": "file"}
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {names[line.split()[0]]: int(line.split()[1]) / 1024 for line in lines if line.split()[:1] and
            line.split()[0] in names}


def memory_note() -> str:
    memory = memory_mb()
    if not memory:
        return "memory unknown"
    return (f"peak RSS {memory.get('peak', 0):.0f} MB (now {memory.get('anonymous', 0):.0f} MB anonymous + "
            f"{memory.get('file', 0):.0f} MB of mapped files)")
