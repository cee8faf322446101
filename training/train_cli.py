"""``genrec train``: fine-tune the base LLM on a tokenized dataset (``training.finetune``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from training.cli_common import DataOpt, load_data


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
    dataset = load_data(data)
    try:
        merged_dir = run_train(dataset, tokenizer, out, settings, resume=resume)
    except (FileNotFoundError, ValueError) as exc:
        if not resume:
            raise
        raise typer.BadParameter(str(exc), param_hint="--resume") from exc
    typer.echo(f"merged model saved to {merged_dir}")
