"""The ``genrec`` console script: one entry point composing the offline and online commands.

This module is the composition root: it is the only place that sees both ``training`` and
``service`` (which never import each other), e.g. to precompute the users of a dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from service import cli as service_cli
from training import cli as training_cli

app = typer.Typer(
    help="genrec: an LLM generative recommender (semantic IDs, LoRA, constrained top-K on vLLM).",
    no_args_is_help=True,
    add_completion=False,
)
app.registered_commands.extend(training_cli.app.registered_commands)
app.registered_commands.extend(c for c in service_cli.app.registered_commands if c.name != "precompute")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@app.command("recommend-batch")
def recommend_batch(
    artifacts: Annotated[Path, typer.Option(help="artifact bundle directory")],
    input: Annotated[Path, typer.Option("--input", help=service_cli.HISTORIES_HELP)],
    out: Annotated[Path, typer.Option(help="output JSONL: {user_id, items}")],
    k: int = 20,
    batch_size: int = 64,
) -> None:
    """Top-K for every user of a histories file, through the serving engine."""
    from model.bundle import BundleError, load_bundle
    from model.vllm_engine import EngineConfig, VllmRecommender
    from service.batch import recommend_to_jsonl

    logging.basicConfig(level=logging.INFO, format=service_cli.LOG_FORMAT)
    try:
        total = service_cli.count_histories(input)
        bundle = load_bundle(artifacts)
    except (service_cli.HistoryFileError, BundleError) as exc:
        raise _fail(str(exc)) from exc
    if not 1 <= k <= len(bundle.catalog):
        raise _fail(f"--k must be between 1 and the catalog size {len(bundle.catalog)}, got {k}")
    recommender = VllmRecommender(bundle, EngineConfig(beam_width=k, max_batch=batch_size))
    summary = recommend_to_jsonl(
        recommender, service_cli.read_histories(input), out, k=k, batch_size=batch_size, total=total
    )
    typer.echo(
        f"wrote top-{k} for {summary.users} users to {out} in {summary.wall_s:.1f}s "
        f"({summary.unknown_items_skipped} unknown history items skipped)"
    )


@app.command()
def precompute(
    histories: Annotated[Path | None, typer.Option(help=service_cli.HISTORIES_HELP)] = None,
    data: Annotated[
        Path | None, typer.Option(help="LC-Rec dataset directory: precompute all its users")
    ] = None,
    k: Annotated[int | None, typer.Option(help="list length to cache (default: MAX_K)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="users per engine call (default: settings)")] = None,
) -> None:
    """Compute every known user's top-K with the engine and write it (and their history) to Redis."""
    if (histories is None) == (data is None):
        raise _fail("give exactly one of --histories FILE.jsonl or --data DATASET_DIR")
    if histories is not None:
        service_cli.precompute_command(histories=histories, k=k, batch_size=batch_size)
        return
    from service.settings import get_settings
    from training.data import DataError, load_lcrec, serving_histories

    settings = get_settings()
    service_cli.configure_logging(settings.log_level)
    assert data is not None
    try:
        dataset = load_lcrec(data)
        summary = service_cli.run_precompute(
            settings,
            serving_histories(dataset),
            k if k is not None else settings.max_k,
            batch_size if batch_size is not None else settings.precompute_batch_size,
            total=len(dataset.sequences),
        )
    except (DataError, FileNotFoundError, ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"cached top-K for {summary.cached}/{summary.users} users ({summary.users_per_s:.1f} users/s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
