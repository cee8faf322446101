"""``genrec train``: fine-tune the base LLM on a tokenized dataset (``training.finetune``).

Its settings options are derived from :class:`training.train_config.TrainConfig`'s fields
(``training.config_options``): a new field is a new option, with the field's help and default.
Options override the ``--config`` file's values; ``--task NAME=WEIGHT`` sets the mixture, and
``--lora-r R`` also makes ``lora_alpha`` 2 R unless the file or ``--lora-alpha`` sets it.

Under ``accelerate launch --multi_gpu --num_processes N ... -m genrec_cli train ...`` every
process runs this command and trains data-parallel (``training.data_parallel``); only the main
process writes the run directory and prints where the merged model is.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from training.cli_common import DataOpt, load_data
from training.config_options import field_options, given, merged, option_of
from training.task_mixture import TASKS
from training.train_config import TrainConfig

SETTINGS_PANEL = "Settings (TrainConfig fields; they override --config)"
OPTIONS = field_options(TrainConfig, skip=("tasks",), panel=SETTINGS_PANEL)
ANY_OPTION = "--config or the train options"


def _task_overrides(specs: list[str] | None) -> dict[str, dict[str, object]]:
    """``--task NAME=WEIGHT`` (repeatable): enable NAME with that weight; weight 0 disables it."""
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


def _read_config(path: Path | None) -> dict[str, Any]:
    try:
        base = json.loads(path.read_text()) if path is not None else {}
        if not isinstance(base, dict):
            raise json.JSONDecodeError("expected a JSON object of TrainConfig fields", "", 0)
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--config") from exc
    return base


def train_settings(
    config: Path | None, overrides: dict[tuple[str, ...], Any], task: list[str] | None
) -> TrainConfig:
    """The config file's fields, overridden by the options typed (field path -> value) and ``--task``."""
    base = _read_config(config)
    overrides = dict(overrides)
    if ("lora_r",) in overrides and "lora_alpha" not in base and ("lora_alpha",) not in overrides:
        overrides[("lora_alpha",)] = 2 * overrides[("lora_r",)]
    fields = merged(base, overrides)
    tasks = dict(fields.get("tasks") or {})
    for name, spec in _task_overrides(task).items():
        tasks[name] = {**(tasks.get(name) or {}), **spec}
    if tasks:
        fields["tasks"] = tasks
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as exc:
        locs = [tuple(e["loc"]) for e in exc.errors()]
        typed = [option_of(OPTIONS, loc) for loc in locs if loc in overrides]  # an option given here
        hint = ", ".join(sorted({o for o in typed if o})) if len(typed) == len(locs) else ANY_OPTION
        raise typer.BadParameter(str(exc), param_hint=hint) from exc


def train(
    ctx: typer.Context,
    data: DataOpt,
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="output directory of `genrec tokenize`")],
    out: Annotated[Path, typer.Option(help="run directory (merged model, catalog, trie, report)")],
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON TrainConfig; options given here override it")
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            help=f"NAME=WEIGHT, repeatable: enable a task (weight 0: disable); NAME: {', '.join(TASKS)}",
            rich_help_panel=SETTINGS_PANEL,
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from OUT/checkpoints/last.pt")] = False,
    **values: Any,
) -> None:
    """LoRA fine-tune the base LLM on the task mixture (next-item by default), optionally anneal, merge."""
    from training.base_model import TINY, resolve_base_model
    from training.data_parallel import is_main_process
    from training.finetune import RUN_CATALOG, RUN_TRIE
    from training.finetune import train as run_train
    from training.train_config import SCRATCH

    for part in (RUN_CATALOG, RUN_TRIE):
        if not (tokenizer / part).is_file():
            raise typer.BadParameter(
                f"{tokenizer} has no {part}; run `genrec tokenize` first", param_hint="--tokenizer"
            )
    settings = train_settings(config, given(OPTIONS, values, ctx), task)
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
    if is_main_process():
        typer.echo(f"merged model saved to {merged_dir}")


# typer reads the signature: the fixed parameters above, then one option per TrainConfig field.
_fixed = [p for p in inspect.signature(train, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
train.__signature__ = inspect.Signature([*_fixed, *(o.parameter for o in OPTIONS)])  # type: ignore[attr-defined]
