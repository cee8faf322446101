"""`genrec histories`: the batch / precompute input written from a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import genrec_cli
from training.data import load_lcrec
from training.synthetic import generate_synthetic


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("hist") / "data", num_users=30, num_items=40)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(genrec_cli.app, ["histories", *args])
    return result.exit_code, result.output


def _read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_serve_split_writes_whole_sequences(data_dir: Path, tmp_path: Path) -> None:
    code, output = _run("--data", str(data_dir), "--out", str(tmp_path / "h.jsonl"))
    assert code == 0, output
    sequences = load_lcrec(data_dir).sequences
    lines = _read(tmp_path / "h.jsonl")
    assert {line["user_id"]: line["history"] for line in lines} == {u: list(s) for u, s in sequences.items()}


def test_test_split_drops_the_target_and_samples(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    code, output = _run("--data", str(data_dir), "--out", str(out), "--split", "test", "--max-users", "7")
    assert code == 0, output
    sequences = load_lcrec(data_dir).sequences
    lines = _read(out)
    assert len(lines) == len({line["user_id"] for line in lines}) == 7
    for line in lines:
        seq = list(sequences[str(line["user_id"])])
        assert line["history"] == seq[:-1][-20:]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--split", "bogus"], "--split"), (["--max-users", "0"], "--max-users")],
)
def test_bad_options_are_named(data_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, output = _run("--data", str(data_dir), "--out", str(tmp_path / "x.jsonl"), *args)
    assert code == 2
    assert message in output
    assert not (tmp_path / "x.jsonl").exists()
