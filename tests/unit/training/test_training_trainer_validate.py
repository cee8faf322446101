"""Trainer.validate: which validation metric early stopping and keep_best watch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoint import Checkpoints, StageState
from training.train_config import TrainConfig
from training.trainer import MAIN, Trainer


class ScriptedValidator:
    """Returns the next of a fixed list of metric dicts (the trainer only reads ``k`` and calls)."""

    k = 10

    def __init__(self, points: list[dict[str, float]]) -> None:
        self.points = iter(points)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        return next(self.points)


# Recall peaks at the second validation, NDCG at the third: the two metrics pick different steps.
POINTS = [
    {"recall@10": 0.05, "ndcg@10": 0.020},
    {"recall@10": 0.08, "ndcg@10": 0.030},
    {"recall@10": 0.07, "ndcg@10": 0.040},
    {"recall@10": 0.06, "ndcg@10": 0.035},
]


@pytest.mark.parametrize(("metric", "best_step", "best"), [("recall", 2, 0.08), ("ndcg", 3, 0.040)])
def test_validate_keeps_the_best_step_of_the_configured_metric(
    tmp_path: Path, metric: str, best_step: int, best: float
) -> None:
    config = TrainConfig(val_every=1, patience=5, val_metric=metric)
    checkpoints = Checkpoints(tmp_path, config)
    trainer = Trainer(config, checkpoints, torch.device("cpu"), pad_id=0)
    model = torch.nn.Linear(2, 2)
    validator = ScriptedValidator(POINTS)
    state = StageState(stage=MAIN)
    for step in range(1, len(POINTS) + 1):
        state.step = step
        with torch.no_grad():
            model.weight.fill_(step)  # the weights at each step differ, so the kept copy tells which
        assert not trainer.validate(model, validator, state)  # type: ignore[arg-type]
    assert (state.best_step, state.best_metric) == (best_step, best)
    assert state.bad_evals == len(POINTS) - best_step
    kept = torch.load(tmp_path / "best.pt", weights_only=False)
    assert kept["step"] == best_step and kept["metric"] == best
    assert torch.all(next(iter(kept["weights"].values())) == best_step)


def test_val_metric_rejects_an_unknown_metric() -> None:
    with pytest.raises(ValueError, match="val_metric"):
        TrainConfig(val_metric="hit")  # type: ignore[arg-type]
