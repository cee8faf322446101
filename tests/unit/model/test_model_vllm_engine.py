"""Engine configuration: device defaults and the CPU thread binding handed to vLLM."""

from __future__ import annotations

import os

import pytest

from model import engine_config
from model.engine_config import EngineConfig

vllm_engine = pytest.importorskip("model.vllm_engine")


def test_cpu_defaults_use_every_core_eagerly() -> None:
    config = EngineConfig().resolved()
    assert config.max_batch == engine_config.CPU_MAX_BATCH
    assert config.threads == len(os.sched_getaffinity(0))
    assert config.block_size == 32
    assert config.compile is False


def test_gpu_defaults_batch_wide_and_compile() -> None:
    config = EngineConfig(device="cuda").resolved()
    assert config.max_batch == engine_config.GPU_MAX_BATCH
    assert config.block_size == 16
    assert config.compile is True
    assert config.threads is None


@pytest.mark.parametrize(("has_bf16", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_dtype_is_bf16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, has_bf16: bool, expected: str
) -> None:
    from model import cpu_features

    monkeypatch.setattr(cpu_features, "cpu_has_bf16", lambda: has_bf16)
    assert EngineConfig().resolved().dtype == expected
    assert EngineConfig(device="cuda").resolved().dtype == "bfloat16"
    assert EngineConfig(dtype="float32").resolved().dtype == "float32"  # an explicit choice wins
    assert EngineConfig(dtype="bfloat16").resolved().dtype == "bfloat16"


def test_settings_pass_engine_dtype_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("ENGINE_DTYPE", "float32")
    assert Settings().engine_config().dtype == "float32"
    monkeypatch.setenv("ENGINE_DTYPE", "fp8")
    with pytest.raises(ValidationError, match="engine_dtype"):
        Settings()


def test_explicit_values_win_over_device_defaults() -> None:
    config = EngineConfig(max_batch=3, threads=1, block_size=64, compile=True).resolved()
    assert (config.max_batch, config.threads, config.block_size, config.compile) == (3, 1, 64, True)
    assert config.resolved() == config


def test_cpu_env_binds_the_requested_cores_and_reserves_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_KVCACHE_SPACE"):
        monkeypatch.setenv(name, "")  # records the original, so teardown undoes what the call sets
        monkeypatch.delenv(name)
    vllm_engine._configure_cpu_env(EngineConfig(threads=1, kv_cache_gb=3).resolved())
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == str(min(os.sched_getaffinity(0)))
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_cpu_env_leaves_an_operator_binding_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    for name in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_KVCACHE_SPACE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    vllm_engine._configure_cpu_env(EngineConfig().resolved())
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
