"""``genrec`` subcommands of the offline side, composed into one Typer app.

The evaluation commands (eval, baseline) live here: both score rankings through the same
harness (``training.evaluate``). The others live next to what they drive: ``data_cli``
(generate-data, histories), ``tokenize_cli``, ``train_cli`` and ``export_cli``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from training.cli_common import DataOpt
from training.cli_common import load_data as _load
from training.data_cli import generate_data, histories
from training.export_cli import export
from training.tokenize_cli import tokenize
from training.train_cli import train

if TYPE_CHECKING:
    from model.bundle import ArtifactBundle
    from model.engine_config import EngineConfig
    from model.recommender import Recommender

    ServingEngine = Callable[[ArtifactBundle, EngineConfig], Recommender]

app = typer.Typer(no_args_is_help=True, add_completion=False)
app.command("generate-data")(generate_data)
app.command()(tokenize)
app.command()(train)
app.command()(export)
app.command()(histories)

# ``eval --engine vllm`` runs the serving engine, which the service side builds and training
# may not import: the composition root (genrec_cli) hands its builder over. Without one
# (benchmarks/gpu/offline_cli.py, the offline commands alone) only ``--engine hf`` runs.
_serving_engine: ServingEngine | None = None


def use_serving_engine(build: ServingEngine) -> None:
    """Let ``eval --engine vllm`` build the serving engine as ``build(bundle, config)``."""
    global _serving_engine
    _serving_engine = build


EvalK = Annotated[
    int,
    typer.Option(
        min=1, help="length of each ranked list; Recall and NDCG are reported at 5 and 10 where k allows"
    ),
]
MaxUsers = Annotated[int | None, typer.Option(min=1, help="evaluate a random sample of this many users")]


EVAL_PRECISIONS = ("auto", "fp32", "bf16")


def _eval_device(name: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu (``training.devices``); a name outside
    auto/cpu/cuda, or cuda without a GPU, is an error naming --device."""
    import torch

    from training.devices import pick_device

    if name not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("must be 'auto', 'cpu' or 'cuda'", param_hint="--device")
    if name == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("cuda was asked for but torch sees no GPU", param_hint="--device")
    return pick_device(name).type


def _check_eval_options(
    split: str, engine: str, precision: str, batch_size: int, k: int, beam: int, hf_options_given: bool
) -> None:
    """Every ``eval`` option checked before any model loads, each error naming its option."""
    if split not in ("valid", "test"):
        raise typer.BadParameter("must be 'valid' or 'test'", param_hint="--split")
    if engine not in ("vllm", "hf"):
        raise typer.BadParameter("must be 'vllm' or 'hf'", param_hint="--engine")
    if precision not in EVAL_PRECISIONS:
        raise typer.BadParameter(f"must be one of {', '.join(EVAL_PRECISIONS)}", param_hint="--precision")
    if batch_size < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--batch-size")
    if beam < k:
        raise typer.BadParameter(
            f"the beam ({beam}) must hold the k={k} items it returns", param_hint="--beam"
        )
    if engine == "vllm" and hf_options_given:
        raise typer.BadParameter(
            "--device and --rows apply to --engine hf (vLLM places and batches itself)",
            param_hint="--engine",
        )
    if engine == "vllm" and _serving_engine is None:
        raise typer.BadParameter(
            "the vllm engine is the service's: run eval through `genrec`, or use --engine hf",
            param_hint="--engine",
        )


def _hf_eval_recommender(
    bundle: ArtifactBundle, where: str, rows: int | None, precision: str, beam: int, batch_size: int
) -> tuple[Recommender, Any, dict[str, object]]:
    """The transformers reference engine, the autocast it runs under, and its settings."""
    import torch

    from model.cpu_features import resolve_precision
    from model.hf_engine import hf_recommender
    from training.devices import autocast_for

    rows = rows or (512 if where == "cuda" else 64)
    dtype = resolve_precision(precision, where)
    if where == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    # fp32 weights, bf16 matmuls where the precision says so: what training's validation runs
    scope = autocast_for(torch.device(where), dtype)
    recommender = hf_recommender(bundle, beam_width=beam, max_batch=batch_size, device=where, rows=rows)
    return recommender, scope, {"device": where, "rows": rows, "precision": dtype}


@app.command("eval")
def eval_command(
    artifacts: Annotated[Path, typer.Option(help="artifact bundle directory")],
    data: DataOpt,
    split: Annotated[str, typer.Option(help="valid or test")] = "valid",
    k: EvalK = 20,
    max_users: MaxUsers = None,
    beam: Annotated[
        int | None,
        typer.Option(min=1, help="beam width of the constrained search (ENGINE_BEAM_WIDTH when serving) [k]"),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="vllm (the serving engine) or hf (transformers reference)")
    ] = "vllm",
    batch_size: Annotated[int, typer.Option(help="users per engine call (one constrained search)")] = 64,
    device: Annotated[str, typer.Option(help="hf engine: auto, cpu or cuda [auto]")] = "auto",
    rows: Annotated[
        int | None,
        typer.Option(help="hf engine: sequences per forward pass [64 on cpu, 512 on cuda]", min=1),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 on cuda and on CPUs where bf16 measures faster), fp32 or bf16: the hf "
            "engine's autocast, the vllm engine's dtype (ENGINE_DTYPE when serving)"
        ),
    ] = "auto",
    out: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    lists: Annotated[
        Path | None,
        typer.Option(help="write every user's ranked list here (JSONL: user_id, target, items)"),
    ] = None,
) -> None:
    """Recall@5/10 and NDCG@5/10 through the constrained engine (leave-one-out, full ranking)."""
    import contextlib

    from model.bundle import BundleError, load_bundle
    from training.evaluate import evaluate, select_examples

    beam = k if beam is None else beam
    hf_options_given = device != "auto" or rows is not None
    _check_eval_options(split, engine, precision, batch_size, k, beam, hf_options_given)
    where = _eval_device(device) if engine == "hf" else None
    try:
        bundle = load_bundle(artifacts)
    except BundleError as exc:
        raise typer.BadParameter(str(exc), param_hint="--artifacts") from exc
    examples = select_examples(_load(data), split, max_users)
    settings: dict[str, object] = {"engine": engine}
    if where is not None:
        recommender, scope, hf_settings = _hf_eval_recommender(
            bundle, where, rows, precision, beam, batch_size
        )
        settings.update(hf_settings)
    else:
        from model.engine_config import VLLM_DTYPE, EngineConfig

        assert _serving_engine is not None
        config = EngineConfig(beam_width=beam, max_batch=batch_size)
        if precision != "auto":
            config = replace(config, dtype=VLLM_DTYPE[precision])
        recommender = _serving_engine(bundle, config)
        scope = contextlib.nullcontext()
        settings.update(dtype=config.resolved().dtype)
    settings.update(batch_size=batch_size, beam=beam)
    with scope:
        report = evaluate(recommender, examples, split=split, k=k, batch_size=batch_size, lists=lists)
    report.extra.update(settings)
    text = json.dumps(report.to_json(), indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    typer.echo(text)


@app.command("baseline")
def baseline_command(
    data: DataOpt,
    method: Annotated[str, typer.Option(help="popular or sasrec (fitted on the training split)")],
    out: Annotated[Path | None, typer.Option(help="write {valid, test} reports here (JSON)")] = None,
    k: EvalK = 20,
    max_users: MaxUsers = None,
    sasrec_config: Annotated[
        Path | None,
        typer.Option("--sasrec-config", help="JSON SasrecConfig (model size, budget, early stop)"),
    ] = None,
    seed: int = 0,
) -> None:
    """Recall@5/10 and NDCG@5/10 of a non-LLM baseline on the validation and test splits, through
    the same harness as genrec eval."""
    from training.baselines import METHODS, build_baseline
    from training.evaluate import evaluate, select_examples
    from training.sasrec import SasrecConfig

    if method not in METHODS:
        raise typer.BadParameter(f"must be one of {', '.join(METHODS)}", param_hint="--method")
    from pydantic import ValidationError

    try:
        fields = json.loads(sasrec_config.read_text()) if sasrec_config is not None else {}
        sasrec = SasrecConfig.model_validate({"seed": seed, **fields})
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {sasrec_config}: {exc}", param_hint="--sasrec-config") from exc
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--sasrec-config") from exc
    dataset = _load(data)
    started = time.perf_counter()
    ranker = build_baseline(method, dataset, sasrec)
    fit_s = time.perf_counter() - started
    reports = {
        split: evaluate(ranker, select_examples(dataset, split, max_users, seed), split=split, k=k).to_json()
        for split in ("valid", "test")
    }
    summary: dict[str, object] = {"method": method, "dataset": dataset.name, "fit_s": round(fit_s, 1)}
    if method == "sasrec":
        trained = ranker.trained  # type: ignore[union-attr]
        summary.update(
            config=sasrec.model_dump(),
            config_file=str(sasrec_config) if sasrec_config else None,
            epochs_run=trained.epochs_run,
            best_early_stop_recall10=trained.best_holdout_recall10,
        )
    text = json.dumps({**summary, **reports}, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    typer.echo(text)
