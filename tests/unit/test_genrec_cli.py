"""`genrec recommend-batch`: every option and the input are checked before the engine loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import genrec_cli


@pytest.fixture(autouse=True)
def _no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must fail before vLLM is even imported, let alone the model loaded."""
    import model.vllm_engine

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the engine was loaded for input that was going to be refused")

    monkeypatch.setattr(model.vllm_engine, "VllmRecommender", refuse)


def _run(
    tmp_path: Path, *args: str, histories: str = '{"user_id": "u", "history": ["a"]}\n'
) -> tuple[int, str]:
    source = tmp_path / "in.jsonl"
    source.write_text(histories)
    base = ["recommend-batch", "--artifacts", str(tmp_path / "none"), "--input", str(source)]
    result = CliRunner().invoke(genrec_cli.app, [*base, "--out", str(tmp_path / "out.jsonl"), *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--k", "0"], "--k"),
    ],
)
def test_bad_options_exit_2_naming_the_option(tmp_path: Path, args: list[str], named: str) -> None:
    code, output = _run(tmp_path, *args)
    assert code == 2, output
    assert named in output
    assert not (tmp_path / "out.jsonl").exists()


def test_an_empty_input_file_is_refused(tmp_path: Path) -> None:
    code, output = _run(tmp_path, histories="\n")
    assert code == 2, output
    assert "--input" in output and "no users" in output
    assert not (tmp_path / "out.jsonl").exists()


def test_a_malformed_line_is_named(tmp_path: Path) -> None:
    code, output = _run(tmp_path, histories='{"user_id": "u"}\n')
    assert code == 2, output
    assert "in.jsonl:1" in output


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(genrec_cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"genrec {version('genrec')}"


def test_command_help_has_no_raw_markup_and_serve_lists_its_environment() -> None:
    for command in genrec_cli.app.registered_commands:
        doc = (command.callback.__doc__ or "") if command.callback else ""
        assert "``" not in doc, command.name
    result = CliRunner().invoke(genrec_cli.app, ["serve", "--help"])
    assert result.exit_code == 0
    for name in ("REDIS_URL", "PORT", "ENGINE_URL", "API_KEY"):
        assert name in result.output
    from service.settings import environment_help

    assert "CORS_ORIGINS=[]" in environment_help()  # a factory default shows its value
    assert "Undefined" not in environment_help()


def test_eval_builds_the_serving_engine_through_the_service_side() -> None:
    """training may not import service: genrec hands eval the one builder of the vLLM engine."""
    import training.cli
    from service.engine.connect import serving_recommender

    assert training.cli._serving_engine is serving_recommender


def test_the_offline_commands_alone_refuse_eval_on_vllm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/gpu/offline_cli.py runs training.cli without the service side: --engine hf only."""
    import training.cli

    monkeypatch.setattr(training.cli, "_serving_engine", None)
    args = ["eval", "--artifacts", str(tmp_path), "--data", str(tmp_path)]
    result = CliRunner().invoke(training.cli.app, args)
    assert result.exit_code == 2

    def flat(text: str) -> str:  # without Rich's error frame and line breaks
        return "".join(ch for ch in text if not ch.isspace() and ch not in "│╭╮╰╯─")

    assert flat("--engine: the vllm engine is the service's: run eval through `genrec`") in flat(
        result.output
    )
