"""What this CPU can do fast, read at run time: machines that run genrec differ.

One of the project's machines (an AMD EPYC with AVX512-BF16) ran a 2048x2048 matmul at 660
GFLOPS in bf16 and 151 in fp32; another had AVX2 only, where bf16 is emulated and slower than
fp32; a third (an Intel Xeon with AVX512-BF16 but no AMX) has the flag and still ran bf16
slower than fp32 (64 against 78 GFLOPS, and SmolLM2 training at 45 against 70 tokens/s). So a
flag is not enough: bf16 is chosen where the flag is present *and* a short matmul probe
measures it faster. Training (autocast) and the engine (``ENGINE_DTYPE=auto``) ask here instead
of assuming either.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Any of these flags means native bf16 dot products (AVX512-BF16, or AMX tiles on Sapphire Rapids+).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")
# bf16 must beat fp32 by this much in the probe to be chosen (the probe is short and noisy, and
# a tie is not worth bf16's rounding).
BF16_MIN_SPEEDUP = 1.2
PROBE_SIZE = 1024


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


def cpu_bf16_flag() -> bool:
    """True when this CPU reports native bf16 dot products (AVX512-BF16 or AMX)."""
    return bool(cpu_flags() & BF16_FLAGS)


PROBE_REPS = 5


@functools.cache
def bf16_matmul_speedup() -> float:
    """fp32 time over bf16 time of the same PROBE_SIZE^2 matmul on this CPU (>1: bf16 is
    faster); ~0.2 s.

    The two precisions are timed alternately, best of PROBE_REPS each, so a burst of load from
    another process slows both alike instead of tipping the choice (timing all of one, then all
    of the other, let a loaded machine flip it).
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=generator)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=generator)
    pairs = {dtype: (a.to(dtype), b.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, float("inf"))
    for rep in range(PROBE_REPS + 1):  # the first round warms up
        for dtype, (x, y) in pairs.items():
            started = time.perf_counter()
            x @ y
            if rep:
                best[dtype] = min(best[dtype], time.perf_counter() - started)
    return best[torch.float32] / best[torch.bfloat16]


@functools.cache
def cpu_has_bf16() -> bool:
    """True when bf16 pays on this CPU: native bf16 flags and a probe that measures it at least
    BF16_MIN_SPEEDUP times faster than fp32 (no flag: no probe, bf16 is emulated)."""
    if not cpu_bf16_flag():
        logger.info("CPU precision: fp32 (no native bf16 flag)")
        return False
    speedup = bf16_matmul_speedup()
    pays = speedup >= BF16_MIN_SPEEDUP
    logger.info(
        "CPU precision: %s (native bf16 flag; a %dx%d bf16 matmul ran %.2fx the fp32 speed)",
        "bf16" if pays else "fp32", PROBE_SIZE, PROBE_SIZE, speedup,
    )  # fmt: skip
    return pays


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto`` -> ``bf16`` on CUDA and on CPUs where bf16 pays (``cpu_has_bf16``), else ``fp32``;
    others as given."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16"
    return "bf16" if cpu_has_bf16() else "fp32"
