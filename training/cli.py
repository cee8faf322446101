"""``genrec`` subcommands of the offline side: data, tokenize, train, export, eval."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from training.data import DataError, InteractionData, load_lcrec, serving_histories

if TYPE_CHECKING:
    from model.bundle import ArtifactBundle
    from model.engine_config import EngineConfig
    from model.recommender import Recommender

    ServingEngine = Callable[[ArtifactBundle, EngineConfig], Recommender]

app = typer.Typer(no_args_is_help=True, add_completion=False)
logger = logging.getLogger(__name__)

# ``eval --engine vllm`` runs the serving engine, which the service side builds and training
# may not import: the composition root (genrec_cli) hands its builder over. Without one
# (benchmarks/gpu/offline_cli.py, the offline commands alone) only ``--engine hf`` runs.
_serving_engine: ServingEngine | None = None


def use_serving_engine(build: ServingEngine) -> None:
    """Let ``eval --engine vllm`` build the serving engine as ``build(bundle, config)``."""
    global _serving_engine
    _serving_engine = build


DataOpt = Annotated[
    Path, typer.Option("--data", help="LC-Rec dataset directory (X.inter.json + X.item.json)")
]
EvalK = Annotated[
    int,
    typer.Option(
        min=1, help="length of each ranked list; Recall and NDCG are reported at 5 and 10 where k allows"
    ),
]
MaxUsers = Annotated[int | None, typer.Option(min=1, help="evaluate a random sample of this many users")]


def _load(path: Path) -> InteractionData:
    try:
        return load_lcrec(path)
    except (DataError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc


@app.command("generate-data")
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


@app.command()
def tokenize(
    data: DataOpt,
    out: Annotated[Path, typer.Option(help="output directory for catalog.json, trie.npz, report")],
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON ItemTokenizerConfig; options given here override it")
    ] = None,
    sources: Annotated[
        str | None, typer.Option(help="comma-separated, in code order: semantic, behavior or both (dual)")
    ] = None,
    levels: Annotated[int | None, typer.Option(help="semantic (text) k-means levels [3]")] = None,
    codebook_size: Annotated[int | None, typer.Option(help="codes per semantic level [256]")] = None,
    behavior_levels: Annotated[int | None, typer.Option(help="behavioural (SASRec) levels [1]")] = None,
    behavior_codebook_size: Annotated[
        int | None, typer.Option(help="codes per behavioural level [256]")
    ] = None,
    align: Annotated[
        bool | None,
        typer.Option("--align/--no-align", help="save codebooks for the LLM-aligned token init [on]"),
    ] = None,
    text_encoder: Annotated[
        str | None,
        typer.Option(help="item text embedder: minilm, smollm2 (hidden states) or a HF checkpoint [minilm]"),
    ] = None,
    text_max_tokens: Annotated[int | None, typer.Option(help="LLM text encoder: tokens per item [32]")] = (
        None
    ),
    seed: Annotated[int | None, typer.Option(help="k-means and SASRec seed [0]")] = None,
) -> None:
    """Give every item a semantic ID: text and/or behaviour vectors -> residual k-means + disambiguation."""
    from pydantic import ValidationError

    from training.item_tokenizer import ItemTokenizerConfig, tokenize_dataset

    overrides = {
        "sources": tuple(s.strip() for s in sources.split(",") if s.strip()) if sources is not None else None,
        "levels": levels,
        "codebook_size": codebook_size,
        "behavior_levels": behavior_levels,
        "behavior_codebook_size": behavior_codebook_size,
        "align": align,
        "text_encoder": text_encoder,
        "text_max_tokens": text_max_tokens,
        "seed": seed,
    }
    try:
        base = json.loads(config.read_text()) if config is not None else {}
        settings = ItemTokenizerConfig.model_validate(
            {**base, **{k: v for k, v in overrides.items() if v is not None}}
        )
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {config}: {exc}", param_hint="--config") from exc
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config or the tokenizer options") from exc
    dataset = _load(data)
    try:
        _, report = tokenize_dataset(dataset, settings, out)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(json.dumps(report.to_json(), indent=2))


def _task_overrides(specs: list[str] | None) -> dict[str, dict[str, object]]:
    """``--task NAME=WEIGHT`` (repeatable): enable NAME with that weight; weight 0 disables it."""
    from training.tasks import TASKS

    out: dict[str, dict[str, object]] = {}
    for spec in specs or []:
        name, sep, weight = spec.partition("=")
        name = name.strip()
        if name not in TASKS:
            raise typer.BadParameter(f"unknown task {name!r}; one of {', '.join(TASKS)}", param_hint="--task")
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            raise typer.BadParameter(f"{spec!r}: weight must be a number", param_hint="--task") from None
        out[name] = {"enabled": value > 0, "weight": value}
    return out


@app.command()
def train(
    data: DataOpt,
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="output directory of `genrec tokenize`")],
    out: Annotated[Path, typer.Option(help="run directory (merged model, catalog, trie, report)")],
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON TrainConfig; options given here override it")
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            help="'smollm2', 'scratch' (small Llama over the IDs), 'tiny' or a local HF checkpoint [smollm2]"
        ),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(help="sequence (whole sequences, packed) or prompt (one per target) [sequence]"),
    ] = None,
    prompt_format: Annotated[str | None, typer.Option(help="compact or lines [compact]")] = None,
    loss_vocab: Annotated[
        str | None, typer.Option(help="sid (softmax over the ID tokens) or full (whole vocabulary) [sid]")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32 or bf16 (auto: bf16 where native) [auto]")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="[1.0]")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stage-1 optimizer steps (overrides epochs)")] = None,
    max_examples: Annotated[int | None, typer.Option(help="a random sample of next-item examples")] = None,
    batch_size: Annotated[int | None, typer.Option(help="[16]")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="[1]")] = None,
    lr: Annotated[float | None, typer.Option(help="[1e-3]")] = None,
    lr_schedule: Annotated[str | None, typer.Option(help="linear or cosine [linear]")] = None,
    lora_r: Annotated[
        int | None, typer.Option(help="LoRA rank (alpha = 2 r unless the config sets it) [16]")
    ] = None,
    full_finetune: Annotated[
        bool | None,
        typer.Option("--full-finetune/--lora", help="train every weight in stage 1, not LoRA [lora]"),
    ] = None,
    titles: Annotated[
        bool | None, typer.Option("--titles/--no-titles", help="item titles in prompts [off]")
    ] = None,
    prompt_align: Annotated[
        int | None,
        typer.Option(help="lines format: left-pad prompts to a multiple of this (the KV block size) [1]"),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", help="NAME=WEIGHT, repeatable: enable a task (weight 0: disable)"),
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="steps between resumable checkpoints [0: none]")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from OUT/checkpoints/last.pt")] = False,
    max_train_s: Annotated[
        float | None, typer.Option(help="stop stage 1 after this much training time")
    ] = None,
    val_every: Annotated[int | None, typer.Option(help="steps between validation Recall@K [0: none]")] = None,
    val_users: Annotated[int | None, typer.Option(help="validation users sampled once [500]")] = None,
    patience: Annotated[
        int | None, typer.Option(help="validations without improvement before stopping")
    ] = None,
    anneal: Annotated[
        bool | None, typer.Option("--anneal/--no-anneal", help="annealing LoRA stage on next-item [off]")
    ] = None,
    anneal_steps: Annotated[int | None, typer.Option(help="[200]")] = None,
    anneal_lr: Annotated[float | None, typer.Option(help="[3e-4]")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [auto]")] = None,
    seed: Annotated[int | None, typer.Option(help="[0]")] = None,
) -> None:
    """LoRA fine-tune the base LLM on the task mixture (next-item by default), optionally anneal, merge."""
    from pydantic import ValidationError

    from training.base_model import TINY, resolve_base_model
    from training.finetune import RUN_CATALOG, RUN_TRIE
    from training.finetune import train as run_train
    from training.train_config import SCRATCH, TrainConfig

    for part in (RUN_CATALOG, RUN_TRIE):
        if not (tokenizer / part).is_file():
            raise typer.BadParameter(
                f"{tokenizer} has no {part}; run `genrec tokenize` first", param_hint="--tokenizer"
            )
    overrides = {
        "base_model": base_model,
        "objective": objective,
        "prompt_format": prompt_format,
        "loss_vocab": loss_vocab,
        "precision": precision,
        "epochs": epochs,
        "max_steps": max_steps,
        "max_train_examples": max_examples,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "lr": lr,
        "lr_schedule": lr_schedule,
        "lora_r": lora_r,
        "full_finetune": full_finetune,
        "with_titles": titles,
        "prompt_align": prompt_align,
        "checkpoint_every": checkpoint_every,
        "max_train_s": max_train_s,
        "val_every": val_every,
        "val_users": val_users,
        "patience": patience,
        "anneal": anneal,
        "anneal_steps": anneal_steps,
        "anneal_lr": anneal_lr,
        "device": device,
        "seed": seed,
    }
    try:
        base = json.loads(config.read_text()) if config is not None else {}
        if not isinstance(base, dict):
            raise json.JSONDecodeError("expected a JSON object of TrainConfig fields", "", 0)
        merged = {**base, **{k: v for k, v in overrides.items() if v is not None}}
        if lora_r is not None and "lora_alpha" not in base:
            merged["lora_alpha"] = 2 * lora_r
        tasks = dict(merged.get("tasks") or {})
        for name, spec in _task_overrides(task).items():
            tasks[name] = {**(tasks.get(name) or {}), **spec}
        if tasks:
            merged["tasks"] = tasks
        settings = TrainConfig.model_validate(merged)
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {config}: {exc}", param_hint="--config") from exc
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config or the train options") from exc
    if settings.base_model not in (TINY, SCRATCH):
        try:  # before any work: a bad path fails now, and smollm2 is converted once, up front
            resolve_base_model(settings.base_model)
        except FileNotFoundError as exc:
            raise typer.BadParameter(str(exc), param_hint="--base-model") from exc
    dataset = _load(data)
    try:
        merged_dir = run_train(dataset, tokenizer, out, settings, resume=resume)
    except (FileNotFoundError, ValueError) as exc:
        if not resume:
            raise
        raise typer.BadParameter(str(exc), param_hint="--resume") from exc
    typer.echo(f"merged model saved to {merged_dir}")


@app.command()
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


@app.command()
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
    dataset = _load(data)
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


EVAL_PRECISIONS = ("auto", "fp32", "bf16")


def _eval_device(name: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without one is an error."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("must be 'auto', 'cpu' or 'cuda'", param_hint="--device")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("cuda was asked for but torch sees no GPU", param_hint="--device")
    return name


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
            help="hf engine: auto (bf16 autocast on cuda and on CPUs with native bf16), fp32 or bf16"
        ),
    ] = "auto",
    out: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
) -> None:
    """Recall@5/10 and NDCG@5/10 through the constrained engine (leave-one-out, full ranking)."""
    import contextlib

    from model.bundle import BundleError, load_bundle
    from model.cpu_features import resolve_precision
    from training.evaluate import evaluate, select_examples

    if split not in ("valid", "test"):
        raise typer.BadParameter("must be 'valid' or 'test'", param_hint="--split")
    if engine not in ("vllm", "hf"):
        raise typer.BadParameter("must be 'vllm' or 'hf'", param_hint="--engine")
    if precision not in EVAL_PRECISIONS:
        raise typer.BadParameter(f"must be one of {', '.join(EVAL_PRECISIONS)}", param_hint="--precision")
    if batch_size < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--batch-size")
    beam = k if beam is None else beam
    if beam < k:
        raise typer.BadParameter(
            f"the beam ({beam}) must hold the k={k} items it returns", param_hint="--beam"
        )
    if engine == "vllm" and (device != "auto" or rows is not None or precision != "auto"):
        raise typer.BadParameter(
            "--device, --rows and --precision apply to --engine hf (vLLM places and batches itself)",
            param_hint="--engine",
        )
    if engine == "vllm" and _serving_engine is None:
        raise typer.BadParameter(
            "the vllm engine is the service's: run eval through `genrec`, or use --engine hf",
            param_hint="--engine",
        )
    where = _eval_device(device) if engine == "hf" else None
    try:
        bundle = load_bundle(artifacts)
    except BundleError as exc:
        raise typer.BadParameter(str(exc), param_hint="--artifacts") from exc
    examples = select_examples(_load(data), split, max_users)
    scope: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    settings: dict[str, object] = {"engine": engine}
    if where is not None:
        import torch

        from model.hf_engine import hf_recommender

        rows = rows or (512 if where == "cuda" else 64)
        dtype = resolve_precision(precision, where)
        if where == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        if dtype == "bf16":  # fp32 weights, bf16 matmuls: what training's validation runs
            scope = torch.autocast(where, dtype=torch.bfloat16)
        recommender: Recommender = hf_recommender(
            bundle, beam_width=beam, max_batch=batch_size, device=where, rows=rows
        )
        settings.update(device=where, rows=rows, precision=dtype, batch_size=batch_size)
    else:
        from model.engine_config import EngineConfig

        assert _serving_engine is not None
        recommender = _serving_engine(bundle, EngineConfig(beam_width=beam, max_batch=batch_size))
        settings.update(batch_size=batch_size)
    settings.update(beam=beam)
    with scope:
        report = evaluate(recommender, examples, split=split, k=k, batch_size=batch_size)
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
