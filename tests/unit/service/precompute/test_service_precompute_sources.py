"""Precompute's sources: histories JSONL parsed as a stream, with located errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.precompute.sources import HistoryFileError, read_histories


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
