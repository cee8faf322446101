"""What this CPU can do fast, read at run time: machines that run genrec differ.

One of the project's machines (AVX512-BF16) ran a 2048x2048 matmul at 660 GFLOPS in bf16 and
151 in fp32; another had AVX2 only, where bf16 is emulated and slower than fp32. Training
(autocast) and the engine (``ENGINE_DTYPE=auto``) ask here instead of assuming either.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Any of these flags means native bf16 dot products (AVX512-BF16, or AMX tiles on Sapphire Rapids+).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 matmuls natively (then bf16 beats fp32 on it)."""
    found = bool(cpu_flags() & BF16_FLAGS)
    logger.debug("CPU bf16 support: %s", found)
    return found


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto`` -> ``bf16`` on CUDA and on CPUs with native bf16, else ``fp32``; others as given."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16"
    return "bf16" if cpu_has_bf16() else "fp32"
