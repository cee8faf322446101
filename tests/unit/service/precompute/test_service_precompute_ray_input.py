"""The Ray job's input plan, without Ray: batch ids from the row order, JSONL byte ranges and
Parquet row ranges read back exactly, and bad inputs named before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.precompute.ray_input import plan_input, read_batch
from service.precompute.sources import HistoryFileError

Users = list[tuple[str, list[str]]]


def make_users(n: int, prefix: str = "u") -> Users:
    return [(f"{prefix}{u}", [f"i{(u + j) % 30}" for j in range(u % 3)]) for u in range(n)]


def write_jsonl(path: Path, users: Users, *, blank_every: int = 0) -> Path:
    lines = []
    for n, (user_id, history) in enumerate(users):
        if blank_every and n % blank_every == 0:
            lines.append("   ")
        lines.append(json.dumps({"user_id": user_id, "history": history}))
    path.write_text("\n".join(lines))  # no newline after the last line
    return path


def write_parquet(path: Path, users: Users, row_group_size: int = 4) -> Path:
    table = pa.table(
        {"user_id": [u for u, _ in users], "history": [h for _, h in users]},
        schema=pa.schema([("user_id", pa.string()), ("history", pa.list_(pa.string()))]),
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def read_all(uri: str, batch_size: int) -> tuple[list[str], Users]:
    plan = plan_input(uri, batch_size)
    users = [user for spec in plan.batches for user in read_batch(plan.filesystem, spec)]
    assert plan.users == len(users)
    return [spec.batch_id for spec in plan.batches], users


def test_a_jsonl_file_is_cut_every_batch_size_users_and_read_back_exactly(tmp_path: Path) -> None:
    users = make_users(23)
    path = write_jsonl(tmp_path / "h.jsonl", users, blank_every=5)
    ids, read = read_all(str(path), 5)
    assert ids == ["0:0", "0:5", "0:10", "0:15", "0:20"]
    assert read == users


def test_a_parquet_file_is_cut_across_row_groups_and_read_back_exactly(tmp_path: Path) -> None:
    users = make_users(19)
    path = write_parquet(tmp_path / "h.parquet", users, row_group_size=4)
    ids, read = read_all(str(path), 6)
    assert ids == ["0:0", "0:6", "0:12", "0:18"]
    assert read == users


def test_a_folder_is_read_in_path_order_skipping_hidden_and_marker_files(tmp_path: Path) -> None:
    first, second = make_users(7, "a"), make_users(4, "b")
    write_parquet(tmp_path / "part-1.parquet", second)
    write_jsonl(tmp_path / "part-0.jsonl", first)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part-0.jsonl.crc").write_text("x")
    ids, read = read_all(f"file://{tmp_path}", 5)
    assert ids == ["0:0", "0:5", "1:0"]
    assert read == first + second


def test_the_job_identity_changes_with_the_input_and_the_batch_size(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "h.jsonl", make_users(5))
    job = plan_input(str(path), 2).job
    assert plan_input(str(path), 2).job == job
    assert plan_input(str(path), 3).job != job
    write_jsonl(path, make_users(6))
    assert plan_input(str(path), 2).job != job


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.jsonl", None, "absent.jsonl: no such file or directory"),
        ("h.csv", "user_id,history\n", "unknown histories file type '.csv'"),
        ("h.jsonl", '{"user_id": "u1", "history": []}\n\n[1, 2]\n', "h.jsonl:3: malformed history line"),
        ("h.parquet", b"not parquet", "h.parquet: cannot read Parquet file"),
    ],
)
def test_a_bad_input_is_named_before_anything_runs(
    tmp_path: Path, name: str, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(HistoryFileError, match=message.replace("(", r"\(").replace(".", r"\.")):
        plan_input(str(path), 10)


def test_a_parquet_file_without_the_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.parquet"
    pq.write_table(pa.table({"user": ["u1"], "history": [["i1"]]}), path)
    with pytest.raises(HistoryFileError, match="needs the columns user_id"):
        plan_input(str(path), 10)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HistoryFileError, match="no histories files in the folder"):
        plan_input(str(tmp_path), 10)


def test_a_file_changed_under_the_job_is_noticed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "h.jsonl", make_users(10))
    plan = plan_input(str(path), 5)
    write_jsonl(path, make_users(12))
    with pytest.raises(HistoryFileError, match="the input changed during the job"):
        read_batch(plan.filesystem, plan.batches[0])
