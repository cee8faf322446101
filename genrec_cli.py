"""The ``genrec`` console script: one entry point composing the offline and online commands.

This module is the composition root: it is the only place that sees both ``training`` and
``service`` (which never import each other), e.g. to precompute the users of a dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from service import cli as service_cli
from service.engine.connect import serving_recommender
from service.precompute.sources import HistoryFileError, Source, count_histories, read_histories
from service.settings import Settings, environment_help
from training import cli as training_cli

logger = logging.getLogger("genrec.demo")

# How long the demo waits for its services: the engine loads the model (and vLLM) first.
ENGINE_START_S = 900.0
API_START_S = 120.0
DEMO_HOST = "127.0.0.1"  # HOST of the demo unless set: a demo is not a public server
# The demo's KV cache: 120 users x 20 beams of ~40-token prompts need a few MB, not the 2 GB default.
DEMO_KV_CACHE_GB = "0.25"

app = typer.Typer(
    help="genrec: an LLM generative recommender (semantic IDs, LoRA, constrained top-K on vLLM).",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"genrec {version('genrec')}")
        raise typer.Exit()


@app.callback()
def _logging(
    log_level: Annotated[str, typer.Option(envvar="LOG_LEVEL", help="DEBUG, INFO, WARNING, ...")] = "INFO",
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="print the version")
    ] = False,
) -> None:
    """Log lines (counts, rates, metrics) go to stderr; progress bars show long loops on a terminal."""
    service_cli.configure_logging(log_level)


app.registered_commands.extend(training_cli.app.registered_commands)
training_cli.use_serving_engine(serving_recommender)  # eval --engine vllm: the serving engine
app.registered_commands.extend(c for c in service_cli.app.registered_commands if c.name != "precompute")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@app.command("recommend-batch")
def recommend_batch(
    artifacts: Annotated[Path, typer.Option(help="artifact bundle directory")],
    input: Annotated[Path, typer.Option("--input", help=service_cli.HISTORIES_HELP)],
    out: Annotated[Path, typer.Option(help="output JSONL: {user_id, items}")],
    k: Annotated[int, typer.Option(min=1, help="items per user (at most the catalog size)")] = 20,
    batch_size: Annotated[int, typer.Option(min=1, help="users per engine call")] = 64,
) -> None:
    """Top-K for every user of a histories file, through the serving engine.

    Every option and the whole input file are checked before the engine (vLLM) is loaded.
    """
    from model.bundle import BundleError, load_bundle
    from model.engine_config import EngineConfig
    from service.batch import recommend_to_jsonl

    try:
        total = count_histories(input)
        if total == 0:
            raise _fail(f"--input {input}: no users in the file (one JSON object per line)")
        bundle = load_bundle(artifacts)
    except (HistoryFileError, BundleError) as exc:
        raise _fail(str(exc)) from exc
    if not 1 <= k <= len(bundle.catalog):
        raise _fail(f"--k must be between 1 and the catalog size {len(bundle.catalog)}, got {k}")
    recommender = serving_recommender(bundle, EngineConfig(beam_width=k, max_batch=batch_size))
    summary = recommend_to_jsonl(
        recommender, read_histories(input), out, k=k, batch_size=batch_size, total=total
    )
    typer.echo(
        f"wrote top-{k} for {summary.users} users to {out} in {summary.wall_s:.1f}s "
        f"({summary.unknown_items_skipped} unknown history items skipped, "
        f"{summary.cold_start} users without known history given the popular items)"
    )


@app.command(epilog=environment_help())
def precompute(
    histories: Annotated[str | None, typer.Option(help=service_cli.HISTORIES_HELP)] = None,
    data: Annotated[
        Path | None, typer.Option(help="LC-Rec dataset directory: precompute all its users")
    ] = None,
    from_store: Annotated[bool, typer.Option("--from-store", help=service_cli.FROM_STORE_HELP)] = False,
    k: Annotated[int | None, typer.Option(help=service_cli.K_HELP)] = None,
    batch_size: Annotated[int | None, typer.Option(help=service_cli.BATCH_SIZE_HELP)] = None,
    only_stale: Annotated[bool, typer.Option("--only-stale", help=service_cli.ONLY_STALE_HELP)] = False,
    restart: Annotated[bool, typer.Option("--restart", help=service_cli.RESTART_HELP)] = False,
    report: Annotated[Path | None, typer.Option(help=service_cli.REPORT_HELP)] = None,
    ray: Annotated[bool, typer.Option("--ray", help=service_cli.RAY_HELP)] = False,
    ray_address: Annotated[str | None, typer.Option(help=service_cli.RAY_ADDRESS_HELP)] = None,
    actors: Annotated[int | None, typer.Option(min=1, help=service_cli.ACTORS_HELP)] = None,
) -> None:
    """Compute every known user's top-K with the engine and write it (and their history) to Redis.

    Resumable: run the same command again after an interruption and it continues where it stopped.
    """
    if sum((histories is not None, data is not None, from_store)) != 1:
        raise _fail("give exactly one of --histories FILE.jsonl, --data DATASET_DIR or --from-store")
    if data is None:
        service_cli.precompute_command(
            histories=histories,
            from_store=from_store,
            k=k,
            batch_size=batch_size,
            only_stale=only_stale,
            restart=restart,
            report=report,
            ray=ray,
            ray_address=ray_address,
            actors=actors,
        )
        return
    if ray or ray_address is not None:
        raise _fail("--ray reads --histories FILE_OR_FOLDER, not --data")
    from training.data import DataError

    dataset_dir = data
    service_cli.precompute_cli(
        lambda: _dataset_input(dataset_dir),
        k,
        batch_size,
        restart=restart,
        only_stale=only_stale,
        input_errors=(DataError, FileNotFoundError),
        report=report,
    )


def _dataset_input(path: Path) -> Source:
    """A dataset's users (full sequences) with an identity that changes with any of them.

    The digest covers every user id and sequence in order, so resuming by position is safe
    exactly when it is the same data; hashing is cheap next to one engine call.
    """
    from training.data import load_lcrec, serving_histories

    dataset = load_lcrec(path)
    digest = hashlib.sha256()
    for user, sequence in dataset.sequences.items():
        digest.update(json.dumps([user, sequence]).encode())
    job = f"data:{path.resolve()}:{digest.hexdigest()[:16]}"
    return Source(serving_histories(dataset), job, len(dataset.sequences))


@dataclass(frozen=True)
class DemoPlan:
    """What ``genrec demo`` builds: the synthetic catalog and a tiny model that learns it in minutes.

    The figures are sized for a 2-core laptop: ~3.5 minutes of training (idle machine), test
    Recall@10 0.243 on the synthetic split (random: 0.03; the ``lora`` row of
    benchmarks/results/demo_finetune_modes.json).
    """

    users: int = 600
    items: int = 300
    codebook_size: int = 16
    train: dict[str, object] = field(
        default_factory=lambda: {
            "base_model": "tiny",
            # the recipe the figure above was measured with: one titled prompt per target
            "objective": "prompt",
            "prompt_format": "lines",
            "with_titles": True,
            "prompt_align": 32,
            "epochs": 3.0,
            "batch_size": 32,
            "lr": 3e-3,
            "lora_r": 32,
            "lora_alpha": 64,
        }
    )
    version: str = "demo"


@app.command(epilog=environment_help())
def demo(
    workdir: Annotated[Path, typer.Option(help="where data, run and artifacts go")] = Path(".demo"),
    fresh: Annotated[bool, typer.Option(help="rebuild everything instead of reusing finished steps")] = False,
) -> None:
    """Build the demo end to end (data, tokenizer, tiny model, bundle), then run the engine
    (ENGINE_PORT), the precompute job and the API (PORT) as separate processes.

    Finished steps are reused on the next run. Starts an embedded Redis when REDIS_URL is unset.
    """
    import shutil

    from service.local.stack import sigterm_stops_the_stack
    from service.settings import get_settings

    settings = get_settings()
    if "HOST" not in os.environ:  # the demo listens on loopback unless told otherwise
        settings = settings.model_copy(update={"host": DEMO_HOST})
    service_cli.configure_logging(settings.log_level)
    plan = DemoPlan()
    if fresh:
        shutil.rmtree(workdir, ignore_errors=True)

    started = time.perf_counter()
    with sigterm_stops_the_stack():
        _build_and_run_demo(settings, plan, workdir, started)


def _build_and_run_demo(settings: Settings, plan: DemoPlan, workdir: Path, started: float) -> None:
    """``genrec demo``'s body: each finished step is reused, then the stack runs until stopped."""
    from service.local.stack import genrec_command, run_job
    from training.data import load_lcrec
    from training.finetune import MERGED_DIR
    from training.item_tokenizer import CATALOG_FILE
    from training.synthetic import generate_synthetic

    data_dir, tok_dir, run_dir, artifacts = (workdir / name for name in ("data", "tok", "run", "artifacts"))
    bundle_dir = artifacts / plan.version
    if not any(data_dir.glob("*.inter.json")):
        generate_synthetic(data_dir, num_users=plan.users, num_items=plan.items)
    dataset = load_lcrec(data_dir)
    logger.info("demo data: %d users, %d items", len(dataset.sequences), len(dataset.items))
    # Each model-loading step runs in a child process, so the demo's parent (which supervises
    # the stack for as long as it runs) never holds torch models or their memory.
    if not bundle_dir.is_dir():
        workdir.mkdir(parents=True, exist_ok=True)
        if not (tok_dir / CATALOG_FILE).is_file():
            tok_config = workdir / "tokenizer_config.json"
            tok_config.write_text(json.dumps({"codebook_size": plan.codebook_size}))
            tokenize = (
                "tokenize",
                "--data",
                str(data_dir),
                "--config",
                str(tok_config),
                "--out",
                str(tok_dir),
            )
            run_job("tokenize", genrec_command(*tokenize), {})
        if not (run_dir / MERGED_DIR).is_dir():
            train_config = workdir / "train_config.json"
            train_config.write_text(json.dumps(plan.train))
            train = ("train", "--data", str(data_dir), "--tokenizer", str(tok_dir), "--out", str(run_dir))
            run_job("train", genrec_command(*train, "--config", str(train_config)), {})
        export = ("export", "--run", str(run_dir), "--artifacts", str(artifacts), "--version", plan.version)
        run_job("export", genrec_command(*export), {})
    logger.info("demo bundle %s ready after %.0fs", bundle_dir, time.perf_counter() - started)

    settings = settings.model_copy(update={"artifacts": bundle_dir})
    with service_cli.redis_available(settings) as settings:
        run_local_stack(settings, data_dir, user_id=next(iter(dataset.sequences)), started=started)


def run_local_stack(settings: Settings, data_dir: Path, *, user_id: str, started: float) -> None:
    """Engine, precompute job and API as separate processes on ``settings.redis_url`` (as compose
    runs them), until the API stops or Ctrl-C."""
    from service.local.stack import Listen, genrec_command, run_job, service_process

    assert settings.redis_url is not None
    engine_url = f"http://127.0.0.1:{settings.engine_port}"
    env = {
        "REDIS_URL": settings.redis_url,
        "ARTIFACTS": str(settings.artifacts.resolve()),
        "ENGINE_URL": engine_url,
        "ENGINE_HOST": DEMO_HOST,
        "ENGINE_PORT": str(settings.engine_port),
        "ENGINE_KV_CACHE_GB": os.environ.get("ENGINE_KV_CACHE_GB", DEMO_KV_CACHE_GB),
        "HOST": settings.host,
        "PORT": str(settings.port),
    }
    api_url = f"http://localhost:{settings.port}"
    engine_ready, api_ready = f"{engine_url}/health/ready", f"{api_url}/health/ready"
    engine_listen = Listen(DEMO_HOST, settings.engine_port, "ENGINE_PORT")
    api_listen = Listen(settings.host, settings.port, "PORT")
    with service_process(
        "engine", genrec_command("engine"), env, engine_ready, ENGINE_START_S, engine_listen
    ):
        run_job("precompute", genrec_command("precompute", "--data", str(data_dir)), env)
        with service_process("api", genrec_command("serve"), env, api_ready, API_START_S, api_listen) as api:
            logger.info(
                "genrec is serving on http://%s:%d (engine %s, Redis %s; setup %.0fs) — try: "
                "curl '%s/v1/recommend?user_id=%s&k=%d'",
                settings.host,
                settings.port,
                engine_url,
                settings.redis_url,
                time.perf_counter() - started,
                api_url,
                user_id,
                settings.default_k,
            )
            api.wait()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
