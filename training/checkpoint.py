"""Resumable checkpoints of a training stage, so an interrupted run continues exactly where it stopped.

``last.pt`` holds everything the optimizer loop reads besides the data: the trainable weights,
the optimizer, the scheduler, the torch and Python RNG state (dropout then draws the same masks)
and the :class:`StageState` (step, position in the seeded per-epoch data order, loss average,
validation history). ``best.pt`` keeps the trainable weights of the best validation. Writes go
to a temporary file renamed into place, so an interruption never leaves a torn checkpoint.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.train_config import TrainConfig

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
# Config fields a resumed run may change (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("max_train_s", "device", "checkpoint_every")


@dataclass
class StageState:
    """Where a stage is: everything beyond weights/optimizer/scheduler that resuming needs."""

    stage: str
    step: int = 0
    micro: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens: int = 0
    train_s: float = 0.0
    loss_ema: float | None = None
    losses: list[float] = field(default_factory=list)  # each optimizer step's loss
    val_curve: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped: str = "max_steps"


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the weights that train (LoRA adapters and ID rows, or every weight)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ValueError(f"checkpoint holds weights this model lacks, e.g. {missing[0]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(payload: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def check_resumable(saved: dict[str, Any], config: TrainConfig) -> None:
    """A checkpoint continues only the run it came from: the same config but for RESUMABLE_CHANGES."""
    current = config.model_dump()
    changed = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if changed:
        raise ValueError(
            f"cannot resume: the checkpoint was made with different {', '.join(changed)} "
            "(start a fresh run or use the checkpoint's config)"
        )


class Checkpoints:
    """The checkpoint directory of one run (``out_dir/checkpoints``) and the config it belongs to."""

    def __init__(self, directory: Path, config: TrainConfig) -> None:
        self.directory = directory
        self.config = config

    @property
    def last_path(self) -> Path:
        return self.directory / LAST_CHECKPOINT

    def start(self, resume: bool) -> dict[str, Any] | None:
        """The checkpoint to resume from (checked against the config), or None after removing
        any old checkpoints when this is a fresh run."""
        if not resume:
            shutil.rmtree(self.directory, ignore_errors=True)
            return None
        if not self.last_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {self.last_path} does not exist")
        checkpoint: dict[str, Any] = torch.load(self.last_path, map_location="cpu", weights_only=False)
        check_resumable(checkpoint["config"], self.config)
        return checkpoint

    def save_last(
        self, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: StageState, extra: dict[str, Any]
    ) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": self.config.model_dump(),
            "state": asdict(state),
            "weights": trainable_weights(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "extra": extra,
        }
        _atomic_save(payload, self.last_path)

    def save_best(self, model: torch.nn.Module, state: StageState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "stage": state.stage,
            "step": state.step,
            "metric": state.best_metric,
            "weights": trainable_weights(model),
        }
        _atomic_save(payload, self.directory / BEST_CHECKPOINT)

    def load_best(self, model: torch.nn.Module) -> dict[str, Any]:
        """Put the best validation's weights back into ``model``; returns that checkpoint."""
        saved: dict[str, Any] = torch.load(
            self.directory / BEST_CHECKPOINT, map_location="cpu", weights_only=False
        )
        load_trainable_weights(model, saved["weights"])
        return saved


def restore(checkpoint: dict[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any) -> StageState:
    """Weights, optimizer, scheduler and RNG from ``checkpoint``; returns where the stage was."""
    load_trainable_weights(model, checkpoint["weights"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"])
    return StageState(**checkpoint["state"])
