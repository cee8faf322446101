"""The CLI: the precompute command (its input and settings errors, resume, --from-store, --ray's
input errors), settings."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aredis
from pydantic import ValidationError
from service_fakes import HashRecommender
from typer.testing import CliRunner

from model.catalog import Catalog
from model.recommender import ScoredItem
from service.cli import app
from service.history import HistoryStore
from service.keys import topk_key
from service.settings import Settings, get_settings


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


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


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Environment of a precompute command on the test Redis; ``load_recommender`` is swapped by each test."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ARTIFACTS", str(tmp_path / "no-bundle-here"))
    monkeypatch.setenv("HISTORY_LEN", "5")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def serve_model(monkeypatch: pytest.MonkeyPatch, recommender: object) -> None:
    """The bundle the command loads: the in-test recommender (no model files in unit tests)."""
    monkeypatch.setattr("service.engine.connect.load_recommender", lambda settings: recommender)


def no_model(settings: Settings) -> None:
    raise AssertionError("the model was loaded before the input was checked")


class FailingRecommender(HashRecommender):
    """Dies on its second engine call."""

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        if self.calls:
            raise RuntimeError("engine died")
        return super().recommend(histories, k)


def histories_file(path: Path, n: int) -> Path:
    lines = [
        json.dumps({"user_id": f"u{u}", "history": [f"i{u % 30}", f"i{(u + 1) % 30}"]}) for u in range(n)
    ]
    return write_lines(path, lines)


@pytest.mark.parametrize("args", [[], ["--histories", "h.jsonl", "--from-store"]])
def test_precompute_command_needs_exactly_one_input(cli_env: pytest.MonkeyPatch, args: list[str]) -> None:
    result = CliRunner().invoke(app, ["precompute", *args])
    assert result.exit_code == 2
    assert "exactly one of --histories FILE.jsonl or --from-store" in result.output


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"REDIS_URL": None}, ["--from-store"], "REDIS_URL is not set"),
        (
            {},
            ["--from-store", "--k", "31"],
            "k must be between 1 and 30 (MAX_K + CACHE_EXTRA, the cached list), got 31",
        ),
        (
            {"MAX_K": "10", "CACHE_EXTRA": "0"},
            ["--from-store", "--k", "0"],
            "k must be between 1 and 10 (MAX_K",
        ),
        ({}, ["--histories", "absent.jsonl"], "absent.jsonl: cannot read histories file"),
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, ["--from-store"], "cannot reach Redis at REDIS_URL"),
    ],
)
def test_precompute_command_errors_name_the_problem_before_loading_a_model(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str | None], args: list[str], message: str
) -> None:
    for name, value in env.items():
        if value is None:
            cli_env.delenv(name, raising=False)
        else:
            cli_env.setenv(name, value)
    cli_env.setattr("service.engine.connect.load_recommender", no_model)
    cli_env.chdir(tmp_path)
    result = CliRunner().invoke(app, ["precompute", *args])
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output


@pytest.mark.cluster
async def test_precompute_command_resumes_an_interrupted_run_and_prints_the_summary(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, catalog: Catalog, redis_client: aredis.Redis
) -> None:
    path = histories_file(tmp_path / "h.jsonl", 25)
    args = ["precompute", "--histories", str(path), "--batch-size", "10"]
    serve_model(cli_env, FailingRecommender(catalog))
    failed = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert failed.exit_code == 1
    assert "engine died after 10 users; run the same command again to resume" in failed.output

    healthy = HashRecommender(catalog)
    serve_model(cli_env, healthy)
    report = tmp_path / "report.json"
    done = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--report", str(report)])
    assert done.exit_code == 0, done.output
    assert "15 users read in 2 batches, 15 cached" in done.output
    summary = json.loads(report.read_text())  # the same figures, for schedulers and benchmarks
    assert (summary["users"], summary["cached"], summary["resumed"], summary["k"]) == (15, 15, 10, 30)
    assert summary["users_per_s"] > 0
    assert "10 skipped via resume" in done.output
    assert sum(len(call) for call in healthy.calls) == 15
    assert await redis_client.exists(*(topk_key("test-v1", f"u{u}") for u in range(25))) == 25


@pytest.mark.cluster
async def test_precompute_command_from_store_only_stale(
    cli_env: pytest.MonkeyPatch, catalog: Catalog, redis_client: aredis.Redis
) -> None:
    store = HistoryStore(redis_client)
    await store.set_many({f"u{u}": [f"i{u % 30}"] for u in range(40)})
    serve_model(cli_env, HashRecommender(catalog))
    first = await asyncio.to_thread(CliRunner().invoke, app, ["precompute", "--from-store", "--only-stale"])
    assert first.exit_code == 0, first.output
    assert "40 cached, 0 skipped as fresh" in first.output

    await redis_client.delete(topk_key("test-v1", "u5"))
    again = HashRecommender(catalog)
    serve_model(cli_env, again)
    second = await asyncio.to_thread(CliRunner().invoke, app, ["precompute", "--from-store", "--only-stale"])
    assert second.exit_code == 0, second.output
    assert "1 cached, 39 skipped as fresh" in second.output
    assert again.calls == [[["i5"]]]


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
    assert Settings(engine_beam_width=None, max_k=15).beam_width == 25  # the cached list: MAX_K + CACHE_EXTRA
    assert Settings(engine_beam_width=None, max_k=15, cache_extra=0).beam_width == 15


def test_default_k_above_max_k_is_rejected() -> None:
    with pytest.raises(ValidationError, match="default_k"):
        Settings(default_k=30, max_k=20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray", "--histories", "absent.jsonl"], "absent.jsonl: no such file or directory"),
        (["--ray-address", "auto", "--histories", "h.csv"], "h.csv: unknown histories file type '.csv'"),
        (["--ray", "--histories", "bad.jsonl"], "bad.jsonl:2: malformed history line"),
        (["--ray", "--from-store"], "--ray reads --histories FILE_OR_FOLDER"),
    ],
)
def test_precompute_on_ray_names_a_bad_input_before_starting_ray_or_a_model(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, args: list[str], message: str
) -> None:
    write_lines(tmp_path / "h.csv", ["user_id,history"])
    write_lines(tmp_path / "bad.jsonl", [json.dumps({"user_id": "u1", "history": []}), '{"user_id": ""}'])
    cli_env.setattr("service.engine.connect.load_recommender", no_model)
    cli_env.chdir(tmp_path)
    result = CliRunner().invoke(app, ["precompute", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert message in result.output  # the file named as resolved, with the line


def test_precompute_with_data_refuses_ray(cli_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import genrec_cli

    result = CliRunner().invoke(genrec_cli.app, ["precompute", "--ray", "--data", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "--ray reads --histories FILE_OR_FOLDER, not --data" in result.output


def test_precompute_and_the_service_do_not_import_ray_unless_asked() -> None:
    """ray is imported by ``--ray`` alone: the API, the engine and the other jobs start without it."""
    code = (
        "import sys, genrec_cli, service.api.app, service.engine.server, service.precompute.job; "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=300)
