"""The fine-tuning ablation: one training config per row, each switching one part of the recipe.

Issue 5 asks what each task family and the annealing stage add. Starting from one base config
(``benchmarks/configs/train_beauty.json``), every row changes one thing and keeps the rest,
the training budget included (the same stage-1 steps or seconds), so that the rows' validation
metrics differ by that one part only:

- ``full``: the base config as it is;
- ``without_<family>`` for a family the base enables (its tasks switched off), or
  ``with_<family>`` for one it leaves off (its tasks switched on at ``add_weight`` each);
- ``without_annealing`` / ``with_annealing``: the EAGER-LLM annealing stage flipped;
- ``next_item_only``: every family off and no annealing, the plain recommender.

The rows are plain :class:`TrainConfig` objects; ``benchmarks/ablation_beauty.py`` trains and
evaluates them and :func:`ablation_table` lays the reports side by side.
"""

from __future__ import annotations

from collections.abc import Mapping

from training.task_mixture import (
    BPR,
    MASKED_ITEM,
    NEGATIVE,
    PREFIX_RECON,
    SID_TO_TITLE,
    SOURCE_RECON,
    TITLE_TO_SID,
    TaskSpec,
)
from training.train_config import TrainConfig

# The task families of issue 5 (next-item is the served task and trains in every row).
TASK_FAMILIES: dict[str, tuple[str, ...]] = {
    "alignment": (SID_TO_TITLE, TITLE_TO_SID, SOURCE_RECON, PREFIX_RECON),  # EAGER-LLM, Sem. Convergence
    "auxiliary": (MASKED_ITEM, BPR),  # Cao et al.: recommendation knowledge in natural language
    "negative": (NEGATIVE,),  # Semantic Convergence: negative sampling
}
FULL = "full"
ANNEALING = "annealing"
NEXT_ITEM_ONLY = "next_item_only"
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def _family_on(config: TrainConfig, family: str) -> bool:
    return any(task in config.tasks.active() for task in TASK_FAMILIES[family])


def _switch(config: TrainConfig, tasks: tuple[str, ...], on: bool, add_weight: float) -> TrainConfig:
    mixture = config.tasks.model_copy(
        update={
            task: TaskSpec(enabled=True, weight=add_weight) if on else TaskSpec(enabled=False)
            for task in tasks
        }
    )
    return config.model_copy(update={"tasks": mixture})


def ablation_variants(base: TrainConfig, *, add_weight: float = 0.1) -> dict[str, TrainConfig]:
    """Row name -> its training config, ``full`` first; every other row differs from it in one part."""
    variants = {FULL: base}
    for family, tasks in TASK_FAMILIES.items():
        on = _family_on(base, family)
        name = f"without_{family}" if on else f"with_{family}"
        variants[name] = _switch(base, tasks, not on, add_weight)
    variants[f"without_{ANNEALING}" if base.anneal else f"with_{ANNEALING}"] = base.model_copy(
        update={"anneal": not base.anneal}
    )
    plain = base.model_copy(update={"anneal": False})
    for tasks in TASK_FAMILIES.values():
        plain = _switch(plain, tasks, False, add_weight)
    if plain != base:
        variants[NEXT_ITEM_ONLY] = plain
    # TrainConfig validates on construction only: check each row as if it were read from JSON
    return {name: TrainConfig.model_validate(config.model_dump()) for name, config in variants.items()}


def select_rows(variants: Mapping[str, TrainConfig], rows: str | None) -> dict[str, TrainConfig]:
    """The rows named in ``rows`` (comma-separated, in that order; all when empty)."""
    wanted = [r for r in (rows or "").split(",") if r] or list(variants)
    unknown = sorted(set(wanted) - set(variants))
    if unknown:
        raise ValueError(f"unknown rows {unknown}; the rows are {list(variants)}")
    return {name: variants[name] for name in wanted}


def describe(config: TrainConfig) -> dict[str, object]:
    """What a row trains: its active tasks with weights, and whether it anneals."""
    return {
        "tasks": {task: config.tasks.spec(task).weight for task in config.tasks.active()},
        "anneal": config.anneal,
    }


def ablation_table(
    variants: Mapping[str, TrainConfig], reports: Mapping[str, Mapping[str, object]]
) -> dict[str, dict[str, object]]:
    """Per row: what it trains, its metrics (None if it has no report) and the change against ``full``.

    ``reports`` maps a row to its ``genrec eval`` report (``metrics``, ``users``). Rows evaluated
    on a different set of users than ``full`` cannot be compared and are refused.
    """
    full = reports.get(FULL)
    table: dict[str, dict[str, object]] = {}
    for name, config in variants.items():
        report = reports.get(name)
        row: dict[str, object] = {**describe(config), "valid": None, "delta_vs_full": None}
        if report is not None:
            values = report["metrics"]
            assert isinstance(values, Mapping)
            row["valid"] = {m: float(values[m]) for m in METRICS}
            row["users"] = report.get("users")
            if full is not None and name != FULL:
                if report.get("users") != full.get("users"):
                    raise ValueError(
                        f"ablation row {name!r} was evaluated on {report.get('users')} users, "
                        f"{FULL!r} on {full.get('users')}: rerun both on the same users"
                    )
                base_values = full["metrics"]
                assert isinstance(base_values, Mapping)
                row["delta_vs_full"] = {m: float(values[m]) - float(base_values[m]) for m in METRICS}
        table[name] = row
    return table


BUDGET_FIELDS = ("steps", "tokens", "train_s", "stopped", "examples")


def ablation_result(
    variants: Mapping[str, TrainConfig],
    reports: Mapping[str, Mapping[str, object]],
    train_reports: Mapping[str, Mapping[str, object]],
    *,
    base_config: str,
    tokenizer: str,
    commands: list[str],
) -> dict[str, object]:
    """What ``ablation.json`` holds (and ``beauty_results.py --ablation`` files): the table, the
    budget each row's training actually got, and the commands that made them."""
    return {
        "split": "valid",
        "base_config": base_config,
        "tokenizer": tokenizer,
        "rows": ablation_table(variants, reports),
        "budget": {name: {k: report.get(k) for k in BUDGET_FIELDS} for name, report in train_reports.items()},
        "commands": commands,
    }
