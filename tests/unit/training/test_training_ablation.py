"""The ablation rows: each differs from ``full`` in one part; the table compares like with like."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.ablation import TASK_FAMILIES, ablation_result, ablation_table, ablation_variants, select_rows
from training.task_mixture import TASKS, TaskMixture, TaskSpec
from training.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[3]
BEAUTY_CONFIG = REPO / "benchmarks" / "configs" / "train_beauty.json"


def _differences(a: TrainConfig, b: TrainConfig) -> set[str]:
    """Top-level fields and task names in which two configs differ."""
    left, right = a.model_dump(), b.model_dump()
    fields = {k for k in left if k != "tasks" and left[k] != right[k]}
    return fields | {t for t in TASKS if left["tasks"][t] != right["tasks"][t]}


def test_beauty_config_rows_each_switch_one_part() -> None:
    base = TrainConfig.model_validate_json(BEAUTY_CONFIG.read_text())
    rows = ablation_variants(base)
    assert list(rows) == [
        "full",
        "without_alignment",
        "without_auxiliary",
        "with_negative",  # train_beauty.json leaves negative sampling off
        "without_annealing",
        "next_item_only",
    ]
    assert rows["full"] == base
    assert _differences(base, rows["without_alignment"]) == set(TASK_FAMILIES["alignment"])
    assert not set(TASK_FAMILIES["alignment"]) & set(rows["without_alignment"].tasks.active())
    assert _differences(base, rows["without_auxiliary"]) == {"masked_item", "bpr"}
    assert _differences(base, rows["with_negative"]) == {"negative"}
    assert rows["with_negative"].tasks.negative == TaskSpec(enabled=True, weight=0.1)
    assert _differences(base, rows["without_annealing"]) == {"anneal"}
    assert rows["next_item_only"].tasks.active() == ["next_item"]
    assert rows["next_item_only"].anneal is False
    # the budget is the same in every row
    assert {(r.epochs, r.max_steps, r.max_train_s, r.batch_size, r.lr) for r in rows.values()} == {
        (base.epochs, base.max_steps, base.max_train_s, base.batch_size, base.lr)
    }


def test_a_plain_base_gets_with_rows_and_no_duplicate_next_item_row() -> None:
    rows = ablation_variants(TrainConfig(), add_weight=0.3)
    assert list(rows) == ["full", "with_alignment", "with_auxiliary", "with_negative", "with_annealing"]
    assert rows["with_auxiliary"].tasks.bpr == TaskSpec(enabled=True, weight=0.3)
    assert rows["with_annealing"].anneal is True


def _report(recall10: float, users: int = 100) -> dict[str, object]:
    metrics = {
        "recall@5": recall10 / 2,
        "recall@10": recall10,
        "ndcg@5": recall10 / 4,
        "ndcg@10": recall10 / 3,
    }
    return {"split": "valid", "users": users, "metrics": metrics}


def test_table_gives_each_row_its_change_against_full() -> None:
    base = TrainConfig(tasks=TaskMixture(bpr=TaskSpec(enabled=True, weight=0.5)), anneal=True)
    rows = ablation_variants(base)
    table = ablation_table(rows, {"full": _report(0.08), "without_auxiliary": _report(0.06)})
    assert table["full"]["valid"]["recall@10"] == 0.08
    assert table["full"]["delta_vs_full"] is None
    assert table["full"]["tasks"] == {"next_item": 1.0, "bpr": 0.5}
    assert table["without_auxiliary"]["delta_vs_full"]["recall@10"] == pytest.approx(-0.02)
    assert table["without_auxiliary"]["tasks"] == {"next_item": 1.0}
    assert table["without_annealing"]["valid"] is None  # not run yet
    json.dumps(table)  # what ablation.json holds


def test_table_refuses_rows_evaluated_on_other_users() -> None:
    rows = ablation_variants(TrainConfig(anneal=True))
    with pytest.raises(ValueError, match=r"without_annealing.*same users"):
        ablation_table(rows, {"full": _report(0.08, users=100), "without_annealing": _report(0.07, users=50)})


def test_ablation_result_records_the_budget_each_row_got() -> None:
    rows = ablation_variants(TrainConfig(anneal=True))
    train_reports = {
        "full": {"steps": 300, "tokens": 9000, "train_s": 120.0, "stopped": "time_budget", "x": 1}
    }
    result = ablation_result(
        rows, {"full": _report(0.08)}, train_reports, base_config="c.json", tokenizer="dual", commands=["run"]
    )
    assert result["split"] == "valid"
    assert result["budget"] == {
        "full": {"steps": 300, "tokens": 9000, "train_s": 120.0, "stopped": "time_budget", "examples": None}
    }
    assert result["rows"]["full"]["valid"]["recall@10"] == 0.08
    assert result["commands"] == ["run"]


def test_select_rows_keeps_the_named_rows_in_order_and_names_unknown_ones() -> None:
    rows = ablation_variants(TrainConfig(anneal=True))
    assert select_rows(rows, None) == rows
    assert select_rows(rows, "") == rows
    assert list(select_rows(rows, "without_annealing,full")) == ["without_annealing", "full"]
    with pytest.raises(ValueError, match=r"unknown rows \['bogus'\]"):
        select_rows(rows, "full,bogus")
