"""The machine a benchmark ran on, as every figure must name it: the CPU model and the instruction set its kernels
get (AVX-512, AVX2; an ATEN_CPU_CAPABILITY override is named). Imported by the scripts of this folder (run as
scripts, this folder first on sys.path)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpuinfo_field(name: str) -> str | None:
    """The first value of a /proc/cpuinfo field ("model name", "flags"), or None off Linux."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == name), None)


def cpu_name() -> str:
    """The CPU model ("AMD EPYC", "Intel(R) Xeon(R) ...")."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_isa() -> str:
    """The widest vector instruction set the CPU has: "AVX-512", "AVX2" or "no AVX2", and a forced
    ATEN_CPU_CAPABILITY."""
    flags = (cpuinfo_field("flags") or "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    return isa + (f" (ATEN_CPU_CAPABILITY={forced})" if forced else "")
