"""``genrec generate-data`` and ``genrec histories``: datasets in, and users' histories out as the
input of the serving side's batch commands."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Annotated

import typer

from training.cli_common import DataOpt, load_data
from training.data import serving_histories


def generate_data(
    out: Annotated[Path, typer.Option(help="directory to write Synthetic.inter.json / .item.json")],
    users: int = 600,
    items: int = 300,
    categories: int = 8,
    seed: int = 0,
) -> None:
    """Write the deterministic synthetic dataset (the demo's embedded default)."""
    from training.synthetic import generate_synthetic

    try:
        generate_synthetic(out, num_users=users, num_items=items, num_categories=categories, seed=seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"synthetic dataset written to {out}")


def histories(
    data: DataOpt,
    out: Annotated[Path, typer.Option(help='output JSONL, one {"user_id", "history"} per line')],
    split: Annotated[
        str, typer.Option(help="serve: whole sequences; test / valid: the histories those targets follow")
    ] = "serve",
    max_users: Annotated[int | None, typer.Option(help="a random sample of this many users")] = None,
    seed: int = 0,
) -> None:
    """Write users' histories as the input of `genrec recommend-batch` and `genrec precompute --histories`."""
    from training.evaluate import select_examples

    if max_users is not None and max_users < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--max-users")
    dataset = load_data(data)
    if split == "serve":
        users = list(serving_histories(dataset))
        if max_users is not None and len(users) > max_users:
            users = random.Random(seed).sample(users, max_users)
    elif split in ("valid", "test"):
        users = [(e.user_id, list(e.history)) for e in select_examples(dataset, split, max_users, seed)]
    else:
        raise typer.BadParameter("must be 'serve', 'valid' or 'test'", param_hint="--split")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as sink:
        for user_id, history in users:
            sink.write(json.dumps({"user_id": user_id, "history": list(history)}) + "\n")
    typer.echo(f"wrote {len(users)} histories to {out}")
