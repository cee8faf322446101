"""The input of the Ray precompute job: histories files cut into batches whose ids do not change
between runs.

A Ray job's batches finish in any order and a killed worker's batch is redone, so what is done
is recorded per batch (``DoneBatches``), and a rerun can only skip a batch if it cuts the input
into the SAME batches with the SAME ids. Ray Data's own readers (``read_json``,
``read_parquet``) do not promise that: their blocks carry no row positions and their
boundaries follow Ray's block sizing. So the driver plans the batches itself from the row order
of the files (``plan_input``): files in path order, each cut every ``batch_size`` users, a
batch's id ``<file index>:<first row>``. A JSONL batch is a byte range of its file (found with
one pass over the file, which also validates every line before a model is loaded, as
``--histories`` does without Ray); a Parquet batch is a row range (from the file's metadata).
The workers read their batches themselves (``read_batch``), through the same pyarrow
filesystem, so the input is read in parallel and never passes through the driver twice.

Any filesystem pyarrow opens from a URI works (a local path, ``file://``, ``s3://``,
``gs://``, ``hdfs://``); the input is one file or a folder of them (read recursively; names
starting with ``.`` or ``_``, such as ``_SUCCESS``, are left out). Files end in ``.jsonl``
(``.json``, ``.ndjson``) or ``.parquet`` (``.pq``); Parquet files need the columns ``user_id``
(string) and ``history`` (list of strings), JSONL lines are those of ``--histories``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import ValidationError

from service.precompute.sources import HistoryFileError, HistoryLine, User, parse_history_line

logger = logging.getLogger(__name__)

Format = Literal["jsonl", "parquet"]
SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_CHUNK = 1 << 20  # bytes read at a time while planning a JSONL file


@dataclass(frozen=True)
class BatchSpec:
    """Where one batch's users are: ``rows`` users of file ``path`` from its ``first_row``-th
    (0-based, blank lines not counted); for JSONL also the bytes ``[byte_start, byte_end)`` and
    the line number of the first, for error messages. ``size`` and ``mtime_ns`` are the file's
    when planned: a file rewritten since is refused, not read at positions that no longer fit."""

    batch_id: str
    path: str
    format: Format
    first_row: int
    rows: int
    size: int | None
    mtime_ns: int | None
    byte_start: int = 0
    byte_end: int = 0
    first_line: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BatchSpec:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class InputPlan:
    """The input's batches in input order, its user count, and its identity for the job
    fingerprint: every file's path, size and modification time, and the batch size (the batch
    ids depend on it), so a rewritten input, or another batch size, is a new job."""

    filesystem: pafs.FileSystem
    batches: list[BatchSpec]
    users: int
    job: str


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of ``uri`` (a plain path is a local file)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise HistoryFileError(f"{uri}: cannot open the filesystem: {exc}") from exc
    return filesystem, str(path)


def input_files(filesystem: pafs.FileSystem, path: str, uri: str) -> list[pafs.FileInfo]:
    """The input's files in path order (the order the batch ids number them in)."""
    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise HistoryFileError(f"{uri}: no such file or directory")
        if info.type != pafs.FileType.Directory:
            files = [info]
        else:
            found = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
            files = sorted(
                (f for f in found if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_"))),
                key=lambda f: f.path,
            )
    except (pa.ArrowException, OSError) as exc:
        raise HistoryFileError(f"{uri}: cannot list the input: {exc}") from exc
    if not files:
        raise HistoryFileError(f"{uri}: no histories files in the folder")
    for file in files:
        file_format(file.path)  # every file's format is known before anything runs
    return files


def file_format(path: str) -> Format:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise HistoryFileError(
            f"{path}: unknown histories file type {suffix or '(no suffix)'!r}: "
            f"expected one of {sorted(SUFFIXES)}"
        )
    return SUFFIXES[suffix]


def plan_input(uri: str, batch_size: int) -> InputPlan:
    """Cut the input into batches of ``batch_size`` users (HistoryFileError for a bad input)."""
    filesystem, path = open_filesystem(uri)
    files = input_files(filesystem, path, uri)
    batches: list[BatchSpec] = []
    for index, file in enumerate(files):
        if file_format(file.path) == "jsonl":
            batches.extend(_jsonl_batches(filesystem, file, index, batch_size))
        else:
            batches.extend(_parquet_batches(filesystem, file, index, batch_size))
    identity = [[f.path, f.size, f.mtime_ns] for f in files]
    job = "ray:" + json.dumps({"files": identity, "batch_size": batch_size}, separators=(",", ":"))
    return InputPlan(filesystem, batches, sum(b.rows for b in batches), job)


def _lines(filesystem: pafs.FileSystem, path: str) -> Iterator[tuple[int, bytes]]:
    """Every line of a file with the byte offset it starts at, read a chunk at a time."""
    offset = 0
    pending = b""
    with filesystem.open_input_stream(path, compression=None) as stream:
        while chunk := stream.read(_CHUNK):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield offset, line
                offset += len(line) + 1
    if pending:
        yield offset, pending


def _jsonl_batches(
    filesystem: pafs.FileSystem, file: pafs.FileInfo, index: int, size: int
) -> Iterator[BatchSpec]:
    """One pass over a JSONL file: every line validated, a batch every ``size`` users."""
    path = file.path
    row = end = 0
    start: tuple[int, int] | None = None  # (byte offset, line number) of the open batch's first user
    try:
        for lineno, (offset, line) in enumerate(_lines(filesystem, path), start=1):
            if not line.strip():
                continue
            parse_history_line(line, f"{path}:{lineno}")
            if start is None:
                start = (offset, lineno)
            row += 1
            end = offset + len(line) + 1  # past the newline (or the end of the file)
            if row % size == 0:
                yield _jsonl_spec(file, index, row - size, size, start, end)
                start = None
        if start is not None:
            yield _jsonl_spec(file, index, row - row % size, row % size, start, end)
    except (pa.ArrowException, OSError) as exc:
        raise HistoryFileError(f"{path}: cannot read histories file: {exc}") from exc


def _jsonl_spec(
    file: pafs.FileInfo, index: int, first: int, rows: int, start: tuple[int, int], end: int
) -> BatchSpec:
    return BatchSpec(
        f"{index}:{first}", file.path, "jsonl", first, rows, file.size, file.mtime_ns, start[0], end, start[1]
    )


PARQUET_COLUMNS = ("user_id", "history")


def _parquet_batches(
    filesystem: pafs.FileSystem, file_info: pafs.FileInfo, index: int, size: int
) -> Iterator[BatchSpec]:
    """A Parquet file's batches, from its metadata alone; its schema is checked here."""
    path = file_info.path
    try:
        with filesystem.open_input_file(path) as file:
            parquet = pq.ParquetFile(file)
            schema = parquet.schema_arrow
            rows = parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise HistoryFileError(f"{path}: cannot read Parquet file: {exc}") from exc
    user_type = schema.field("user_id").type if "user_id" in schema.names else None
    history_type = schema.field("history").type if "history" in schema.names else None
    if not (
        user_type is not None
        and (pa.types.is_string(user_type) or pa.types.is_large_string(user_type))
        and history_type is not None
        and (pa.types.is_list(history_type) or pa.types.is_large_list(history_type))
        and (pa.types.is_string(history_type.value_type) or pa.types.is_large_string(history_type.value_type))
    ):
        raise HistoryFileError(
            f"{path}: a histories Parquet file needs the columns user_id (string) and history "
            f"(list of strings); its schema is {schema.to_string(show_schema_metadata=False)!r}"
        )
    for first in range(0, rows, size):
        rows_here = min(size, rows - first)
        yield BatchSpec(
            f"{index}:{first}", path, "parquet", first, rows_here, file_info.size, file_info.mtime_ns
        )


def read_batch(filesystem: pafs.FileSystem, spec: BatchSpec) -> list[User]:
    """The users of one planned batch, in file order (HistoryFileError if the file changed under
    the job or a row is malformed)."""
    try:
        info = filesystem.get_file_info(spec.path)
        if (info.size, info.mtime_ns) != (spec.size, spec.mtime_ns):
            raise HistoryFileError(
                f"{spec.path}: the input changed during the job (size or modification time); "
                "run the command again for a new job over the new input"
            )
        users = _read_jsonl(filesystem, spec) if spec.format == "jsonl" else _read_parquet(filesystem, spec)
    except (pa.ArrowException, OSError) as exc:
        raise HistoryFileError(f"{spec.path}: cannot read histories file: {exc}") from exc
    if len(users) != spec.rows:
        raise HistoryFileError(
            f"{spec.path}: batch {spec.batch_id} has {len(users)} users, planned {spec.rows}: "
            "the input changed during the job"
        )
    return users


def _read_jsonl(filesystem: pafs.FileSystem, spec: BatchSpec) -> list[User]:
    with filesystem.open_input_file(spec.path) as file:
        file.seek(spec.byte_start)
        data = file.read(spec.byte_end - spec.byte_start)
    return [
        parse_history_line(line, f"{spec.path}:{lineno}")
        for lineno, line in enumerate(data.split(b"\n"), start=spec.first_line)
        if line.strip()
    ]


def _read_parquet(filesystem: pafs.FileSystem, spec: BatchSpec) -> list[User]:
    """The spec's rows: only the row groups that hold them are read."""
    with filesystem.open_input_file(spec.path) as file:
        parquet = pq.ParquetFile(file)
        groups, group_start, start = [], 0, None
        for n in range(parquet.metadata.num_row_groups):
            group_rows = parquet.metadata.row_group(n).num_rows
            if group_start + group_rows > spec.first_row and group_start < spec.first_row + spec.rows:
                groups.append(n)
                start = group_start if start is None else start
            group_start += group_rows
        if start is None:
            return []
        table = parquet.read_row_groups(groups, columns=list(PARQUET_COLUMNS))
    rows = table.slice(spec.first_row - start, spec.rows).to_pylist()
    users: list[User] = []
    for n, row in enumerate(rows, start=spec.first_row):
        try:
            record = HistoryLine.model_validate(row)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise HistoryFileError(f"{spec.path}: row {n}: malformed history ({problem})") from exc
        users.append((record.user_id, record.history))
    return users
