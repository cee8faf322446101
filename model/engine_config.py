"""The engine's knobs and their per-device defaults, importable without vLLM (the service reads them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Literal

from model.cpu_features import resolve_precision

EngineDtype = Literal["auto", "float32", "bfloat16"]
VLLM_DTYPE: dict[str, EngineDtype] = {"fp32": "float32", "bf16": "bfloat16"}

CPU_MAX_BATCH = 16
GPU_MAX_BATCH = 256
CPU_BLOCK_SIZE = 32  # vLLM's CPU attention needs multiples of 32
GPU_BLOCK_SIZE = 16


def usable_cores() -> list[int]:
    """The CPU ids this process may run on (its affinity mask, which respects taskset/cgroups)."""
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class EngineConfig:
    """Engine knobs; the service maps its settings onto these.

    ``None`` means "the device's default" (``resolved`` fills them in): on CPU a batch of 16
    users (one prefill step of ~200-token prompts on 2 cores), every core this process may run
    on, eager mode (no minutes of start-up compilation); on GPU a batch of 256, CUDA graphs and
    torch.compile. ``dtype`` ``auto`` is bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16
    or AMX: ~4x fp32's matmul rate), fp32 elsewhere (on AVX2, bf16 is emulated and slower).
    """

    beam_width: int | None = 20
    max_batch: int | None = None
    threads: int | None = None  # CPU only: OpenMP threads, bound to the first cores we may use
    kv_cache_gb: float = 2.0  # CPU only: KV cache size
    gpu_memory_utilization: float = 0.85  # GPU only: share of GPU memory for weights + KV cache
    max_prompt_tokens: int = 512
    history_len: int = 20
    block_size: int | None = None
    device: str = "cpu"
    compile: bool | None = None  # torch.compile (and CUDA graphs on GPU); ~10% faster on CPU
    dtype: EngineDtype = "auto"
    seed: int = 0

    def resolved(self) -> EngineConfig:
        """This config with every device-dependent ``None`` replaced by the device's default."""
        cpu = self.device == "cpu"
        return replace(
            self,
            max_batch=self.max_batch or (CPU_MAX_BATCH if cpu else GPU_MAX_BATCH),
            threads=(self.threads or len(usable_cores())) if cpu else self.threads,
            block_size=self.block_size or (CPU_BLOCK_SIZE if cpu else GPU_BLOCK_SIZE),
            compile=(not cpu) if self.compile is None else self.compile,
            dtype=self.dtype if self.dtype != "auto" else VLLM_DTYPE[resolve_precision("auto", self.device)],
        )
