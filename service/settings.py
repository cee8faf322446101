"""Service settings, read from the environment so one image serves every deployment."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.engine_config import EngineConfig


class Settings(BaseSettings):
    """Every knob of the online side. Env names are the field names, case-insensitive, no prefix."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # redis://host:port/db for one server, redis+cluster://host:port[,host:port...] for a Redis
    # Cluster (service/redis_client.py). None means "start an embedded Redis"; only the serve and
    # migrate-keys commands do that, the app itself refuses.
    redis_url: str | None = None
    # Where the embedded Redis keeps its append-only file (histories survive a restart).
    genrec_data_dir: Path = Path(".genrec-data")
    artifacts: Path = Path("artifacts/current")
    cache_ttl_s: int = Field(default=86400, ge=1)
    default_k: int = Field(default=10, ge=1)
    # The cache holds each user's top max_k; requests with k in 1..max_k slice it.
    max_k: int = Field(default=20, ge=1)
    # The cache holds max_k + cache_extra items per user, so that exclude_seen and exclude= filters
    # still leave k items (users' histories overlap their lists); the engine's beam covers them.
    cache_extra: int = Field(default=10, ge=0)
    # Items of history fed to the model (the literature's protocol uses 20).
    history_len: int = Field(default=20, ge=1)
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    precompute_batch_size: int = Field(default=64, ge=1)
    # ``genrec precompute --ray``: workers (one engine each; None: one per GPU of the Ray cluster
    # with ENGINE_DEVICE=cuda, else 1), the CPUs each reserves on a CPU engine, and how often a
    # dead worker is restarted (its batch retried) before the job fails (-1: without limit).
    precompute_ray_actors: int | None = Field(default=None, ge=1)
    precompute_ray_cpus_per_actor: float = Field(default=1.0, gt=0)
    precompute_ray_max_restarts: int = Field(default=3, ge=-1)
    redis_timeout_s: float = Field(default=2.0, gt=0)
    redis_max_connections: int = Field(default=256, ge=1)
    engine_timeout_s: float = Field(default=60.0, gt=0)
    # The engine service (``genrec engine``) the API sends cache misses and rankings to, or
    # several replicas of it separated by commas (service/engine/replicas.py); unset: the API
    # runs the engine in its own process.
    engine_url: str | None = None
    # Where ``genrec engine`` listens.
    engine_host: str = "0.0.0.0"
    engine_port: int = Field(default=8001, ge=0, le=65535)
    rank_max_candidates: int = Field(default=100, ge=1)
    # How long precompute waits for one batch from the engine service (a CPU batch takes minutes).
    precompute_timeout_s: float = Field(default=1800.0, gt=0)
    log_level: str = "INFO"
    # When set, every endpoint but health and metrics needs header X-API-Key with this value.
    api_key: str | None = None
    # With API_KEY set: true leaves /docs and /openapi.json open to anyone, false needs the key.
    docs_public: bool = False
    # Browser origins allowed to call the API (CORS), as a JSON list, e.g. ["https://shop.example"];
    # empty: no CORS headers (same-origin pages such as /ui need none).
    cors_origins: list[str] = Field(default_factory=list)

    # Engine knobs, passed through to model.engine_config.EngineConfig; None = the device's default
    # (CPU: 16 users per batch, all cores, eager; GPU: 256 users per batch, compiled).
    engine_device: Literal["cpu", "cuda"] = "cpu"
    engine_beam_width: int | None = Field(default=None, ge=1)  # None -> list_len
    engine_max_batch: int | None = Field(default=None, ge=1)
    engine_threads: int | None = Field(default=None, ge=1)
    engine_kv_cache_gb: float = Field(default=2.0, gt=0)
    engine_gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    engine_max_prompt_tokens: int = Field(default=512, ge=1)
    engine_compile: bool | None = None
    # auto: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX), float32 elsewhere
    engine_dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _default_k_fits(self) -> Settings:
        """A default k the cache cannot serve would make every plain request a 422."""
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        return self

    def engine_config(self) -> EngineConfig:
        """The engine's configuration, device defaults resolved."""
        return EngineConfig(
            beam_width=self.beam_width,
            max_batch=self.engine_max_batch,
            threads=self.engine_threads,
            kv_cache_gb=self.engine_kv_cache_gb,
            gpu_memory_utilization=self.engine_gpu_memory_utilization,
            max_prompt_tokens=self.engine_max_prompt_tokens,
            history_len=self.history_len,
            device=self.engine_device,
            compile=self.engine_compile,
            dtype=self.engine_dtype,
        ).resolved()

    @property
    def list_len(self) -> int:
        """How many items the cache holds per user (and the engine computes per miss)."""
        return self.max_k + self.cache_extra

    @property
    def beam_width(self) -> int:
        """The engine's beam width; by default list_len, the length of the list the cache holds."""
        return self.engine_beam_width if self.engine_beam_width is not None else self.list_len


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def environment_help() -> str:
    """The variables ``Settings`` reads, with their defaults: the epilog of the commands' --help."""

    def shown(field: FieldInfo) -> object:
        default = field.get_default(call_default_factory=True)
        return "" if default is None else json.dumps(default) if isinstance(default, list) else default

    names = [f"{name.upper()}={shown(field)}" for name, field in Settings.model_fields.items()]
    return "Environment (see service/settings.py): " + ", ".join(names)
