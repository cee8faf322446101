"""``train_report.json``: what a fine-tuning run did, for export's manifest, benchmarks and people.

It records the config, the examples per task, the steps, losses (each step's, and their moving
average), throughput and validation curve of each stage, where the run resumed and how it stopped.
"""

from __future__ import annotations

import time

import torch

from training.checkpoint import StageState
from training.run_data import EncodedRun
from training.train_config import TrainConfig


def _tokens_per_s(state: StageState) -> float:
    return round(state.tokens / max(state.train_s, 1e-9), 1)


def run_report(
    dataset: str,
    config: TrainConfig,
    run: EncodedRun,
    stages: tuple[StageState, StageState | None],
    *,
    aligned_r2: float | None,
    resumed_from: int | None,
    device: torch.device,
    started: float,
) -> dict[str, object]:
    """The report of a run whose stages ended in ``stages`` (main, anneal or None)."""
    main, anneal = stages
    return {
        "dataset": dataset,
        "config": config.model_dump(),
        "examples": len(run.examples),
        "task_examples": run.task_examples,
        "aligned_sid_init_r2": aligned_r2,
        "steps": main.step,
        "final_loss_ema": anneal.loss_ema if anneal is not None else main.loss_ema,
        "main_loss_ema": main.loss_ema,
        "loss_curve": list(main.losses),
        "tokens": main.tokens,
        "tokens_per_s": _tokens_per_s(main),
        "train_s": round(main.train_s, 2),
        "encode_s": round(run.encode_s, 2),
        "stopped": main.stopped,
        "val_curve": main.val_curve + (anneal.val_curve if anneal else []),
        "best_step": main.best_step,
        f"best_val_{config.val_metric}@{config.val_k}": main.best_metric,
        "resumed_from_step": resumed_from,
        "anneal": None
        if anneal is None
        else {
            "steps": anneal.step,
            "loss_ema": anneal.loss_ema,
            "loss_curve": list(anneal.losses),
            "tokens": anneal.tokens,
            "tokens_per_s": _tokens_per_s(anneal),
        },
        "device": str(device),
        "wall_s": round(time.perf_counter() - started, 1),
    }
