"""The CLI: histories JSONL parsing with located errors, run_precompute, settings from env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError
from service_fakes import HashRecommender
from typer.testing import CliRunner

from service.cache import topk_key
from service.cli import HistoryFileError, app, read_histories, run_precompute
from service.settings import Settings, get_settings


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_histories_streams_users_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "h.jsonl",
        [
            json.dumps({"user_id": "u1", "history": ["i1", "i2"]}),
            "",
            json.dumps({"user_id": "u2", "history": []}),
        ],
    )
    assert list(read_histories(path)) == [("u1", ["i1", "i2"]), ("u2", [])]


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "malformed history line"),
        (json.dumps({"user_id": "u3"}), "history: Field required"),
        (json.dumps({"user_id": "", "history": []}), "user_id"),
        (json.dumps({"user_id": "u3", "history": "i1"}), "history"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    good = json.dumps({"user_id": "u1", "history": ["i1"]})
    path = write_lines(tmp_path / "h.jsonl", [good, "", bad_line, good])
    with pytest.raises(HistoryFileError, match="malformed") as info:
        list(read_histories(path))
    assert f"{path}:3:" in str(info.value)
    assert reason in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryFileError, match="cannot read histories file"):
        list(read_histories(tmp_path / "absent.jsonl"))


def test_precompute_command_rejects_a_bad_file_before_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ARTIFACTS", str(tmp_path / "no-bundle-here"))
    get_settings.cache_clear()
    path = write_lines(tmp_path / "h.jsonl", [json.dumps({"user_id": "u1", "history": []}), "[1, 2]"])
    try:
        result = CliRunner().invoke(app, ["precompute", "--histories", str(path)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert f"{path}:2:" in result.output


def test_run_precompute_fills_redis(tmp_path: Path, redis_url: str, recommender: HashRecommender) -> None:
    users = [("u1", ["i1", "i2"]), ("u2", ["i3"])]
    settings = Settings(redis_url=redis_url, max_k=20, cache_ttl_s=60)
    summary = run_precompute(settings, users, 5, 8, recommender=recommender)
    assert (summary.users, summary.cached, summary.batches) == (2, 2, 1)
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.get(topk_key(recommender.model_version, "u1"))
        assert raw is not None and len(json.loads(raw)) == 5
    finally:
        client.close()


def test_run_precompute_needs_redis_url_and_valid_k(recommender: HashRecommender, redis_url: str) -> None:
    with pytest.raises(RuntimeError, match="REDIS_URL is not set"):
        run_precompute(Settings(redis_url=None), [], 5, 8, recommender=recommender)
    with pytest.raises(ValueError, match="k must be between 1 and max_k=20"):
        run_precompute(Settings(redis_url=redis_url), [], 21, 8, recommender=recommender)


def test_settings_come_from_env_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/1")
    monkeypatch.setenv("cache_ttl_s", "120")
    monkeypatch.setenv("ARTIFACTS", "/tmp/bundle")
    monkeypatch.setenv("ENGINE_BEAM_WIDTH", "32")
    settings = Settings()
    assert settings.redis_url == "redis://example:6379/1"
    assert settings.cache_ttl_s == 120
    assert settings.artifacts == Path("/tmp/bundle")
    assert settings.beam_width == 32
    assert Settings(engine_beam_width=None, max_k=15).beam_width == 15


def test_default_k_above_max_k_is_rejected() -> None:
    with pytest.raises(ValidationError, match="default_k"):
        Settings(default_k=30, max_k=20)
