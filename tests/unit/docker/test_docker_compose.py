"""docker-compose.yml and the Dockerfiles cannot run here (no Docker engine), so check that they
agree with the code: commands exist, options exist, env vars are settings, ports line up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.core import TyperGroup

import genrec_cli
from service.api.app import create_app
from service.engine.server import create_engine_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def cli() -> TyperGroup:
    group = typer.main.get_command(genrec_cli.app)
    assert isinstance(group, TyperGroup)
    return group


def _check_genrec_command(cli: TyperGroup, argv: list[str]) -> None:
    """``argv`` must be ``genrec <subcommand> [--option value ...]`` with real options."""
    assert argv[0] == "genrec", argv
    command = cli.commands.get(argv[1])
    assert command is not None, f"genrec has no subcommand {argv[1]!r}"
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for token in argv[2:]:
        if token.startswith("--"):
            assert token.split("=")[0] in known, f"genrec {argv[1]} has no option {token}"


def _settings(service: dict[str, Any]) -> Settings:
    return Settings(**{key.lower(): value for key, value in service["environment"].items()})


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "engine", "engine-gpu", "api", "precompute"} <= set(services)
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    for name in ("api", "precompute"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["precompute"]["depends_on"]["engine"]["condition"] == "service_healthy"
    assert "engine" not in services["api"]["depends_on"]  # the API degrades without it
    assert services["engine-gpu"]["networks"]["default"]["aliases"] == ["engine"]
    assert _settings(services["engine-gpu"]).engine_device == "cuda"


def test_api_and_jobs_reach_the_engine_service(compose: dict[str, Any]) -> None:
    """API and precompute send misses to the engine service on the port it listens on, and the
    engine's healthcheck asks a route the engine app has."""
    services = compose["services"]
    engine_routes = {getattr(route, "path", None) for route in create_engine_app(Settings()).routes}
    for name in ("engine", "engine-gpu"):
        engine = services[name]
        assert engine["command"] == ["genrec", "engine"]
        port = _settings(engine).engine_port
        assert engine["expose"] == [str(port)]
        health = re.search(r"http://localhost:(\d+)(/\S+)", " ".join(engine["healthcheck"]["test"]))
        assert health is not None and int(health.group(1)) == port and health.group(2) in engine_routes
        for client in ("api", "precompute"):
            assert _settings(services[client]).engine_url == f"http://engine:{port}"


def test_commands_exist_in_the_cli(compose: dict[str, Any], cli: TyperGroup) -> None:
    for name, service in compose["services"].items():
        if name != "redis":
            _check_genrec_command(cli, service["command"])


def test_environment_is_valid_settings(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name, service in compose["services"].items():
        if name == "redis":
            continue
        env = service["environment"]
        unknown = {key for key in env if key.lower() not in fields}
        assert not unknown, f"{name}: env vars that no setting reads: {unknown}"
        settings = _settings(service)
        assert settings.redis_url is not None
        assert settings.redis_url.startswith("redis://redis:")


def test_ports_match_the_served_port(compose: dict[str, Any]) -> None:
    service = compose["services"]["api"]
    assert [f"{_settings(service).port}:{_settings(service).port}"] == service["ports"]
    assert compose["services"]["redis"]["ports"] == ["6379:6379"]


def test_volumes_feed_the_configured_paths(compose: dict[str, Any]) -> None:
    for name in ("api", "engine", "engine-gpu", "precompute"):  # the engine's model, the others' catalog
        service = compose["services"][name]
        artifacts = Path(_settings(service).artifacts)
        assert str(artifacts.parent) in {volume.split(":")[1] for volume in service["volumes"]}
    job = compose["services"]["precompute"]
    histories = job["command"][job["command"].index("--histories") + 1]
    assert str(Path(histories).parent) in {volume.split(":")[1] for volume in job["volumes"]}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_agrees_with_code(dockerfile: Path, cli: TyperGroup) -> None:
    text = dockerfile.read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
    cmd = re.search(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    assert cmd is not None
    _check_genrec_command(cli, yaml.safe_load(cmd.group(1)))
    exposed = re.search(r"^EXPOSE (\d+)$", text, flags=re.MULTILINE)
    assert exposed is not None and int(exposed.group(1)) == Settings().port
    health = re.search(r"http://localhost:(\d+)(/\S+)", text)
    assert health is not None and int(health.group(1)) == Settings().port
    routes = {getattr(route, "path", None) for route in create_app(Settings()).routes}
    assert health.group(2) in routes


def test_compose_builds_the_dockerfiles(compose: dict[str, Any]) -> None:
    built = {Path(s["build"]["dockerfile"]).name for s in compose["services"].values() if "build" in s}
    assert built == {p.name for p in DOCKERFILES}
