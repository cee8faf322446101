"""``genrec export``: a finished run directory becomes a versioned artifact bundle."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer


def export(
    run: Annotated[Path, typer.Option(help="run directory of `genrec train`")],
    artifacts: Annotated[Path, typer.Option(help="artifacts root")] = Path("artifacts"),
    version: Annotated[
        str | None, typer.Option(help="bundle version (default: <dataset>-<UTC time>)")
    ] = None,
) -> None:
    """Write artifacts/<version>/ (model, catalog, trie, manifest) and point current at it."""
    from training.export import export_run

    if version is None:
        report = (
            json.loads((run / "train_report.json").read_text())
            if (run / "train_report.json").is_file()
            else {}
        )
        version = f"{str(report.get('dataset', 'genrec')).lower()}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        bundle = export_run(run, artifacts, version)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"exported {bundle.root} ({len(bundle.catalog)} items)")
