"""One training stage's optimizer loop: batches, loss, steps, validation, early stopping, checkpoints.

The data order is a seeded shuffle per (stage, epoch), so a stage resumed from a checkpoint
(``training.checkpoint``) reads the same batches as one that never stopped. The learning rate
follows transformers' linear or cosine schedule with warmup.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from model.progress import progress
from training.batches import collate_left, length_bucketed_batches
from training.checkpoint import Checkpoints, StageState, restore
from training.data_parallel import DataParallel
from training.devices import autocast_for
from training.encoding import Encoded
from training.loss import token_loss_sum
from training.train_config import TrainConfig
from training.trie_loss import TrieTargets
from training.validation import Validator

logger = logging.getLogger(__name__)

MAIN, ANNEAL = "main", "anneal"
SCHEDULES: dict[str, Callable[..., Any]] = {
    "linear": get_linear_schedule_with_warmup,
    "cosine": get_cosine_schedule_with_warmup,
}


class TrainingInterrupted(RuntimeError):
    """Raised by ``train(..., interrupt_after=N)`` right after the step-N checkpoint (tests)."""


@dataclass
class StagePlan:
    """What one stage trains on and how long: its examples, steps, learning rate and schedule."""

    stage: str
    data: list[Encoded]
    total_steps: int
    lr: float
    schedule: str
    warmup_ratio: float
    validator: Validator | None
    max_train_s: float | None


def stage_steps(examples: int, config: TrainConfig, epochs: float) -> int:
    """Optimizer steps of ``epochs`` passes over ``examples`` (at least one)."""
    per_epoch = math.ceil(examples / (config.batch_size * config.grad_accum))
    return max(1, math.ceil(per_epoch * epochs))


def lr_scheduler(optimizer: torch.optim.Optimizer, plan: StagePlan) -> Any:
    """transformers' schedule: a linear warmup over ``warmup_ratio`` of the steps, then linear or
    cosine decay to 0 at ``total_steps``."""
    warmup = int(plan.total_steps * plan.warmup_ratio)
    return SCHEDULES[plan.schedule](optimizer, warmup, plan.total_steps)


class Trainer:
    """Runs one stage's optimizer loop with checkpoints, validation and early stopping.

    With several processes (``world``) each trains on its slice of every global batch; only the
    main process validates and writes checkpoints (``training.data_parallel``).
    """

    def __init__(
        self,
        config: TrainConfig,
        checkpoints: Checkpoints,
        device: torch.device,
        pad_id: int,
        loss_vocab: list[int] | None = None,
        trie: TrieTargets | None = None,
        world: DataParallel | None = None,
        level_sizes: tuple[int, ...] | None = None,
    ) -> None:
        self.config = config
        self.world = world or DataParallel()
        self.checkpoints = checkpoints
        self.device = device
        self.pad_id = pad_id
        self.loss_vocab = None if loss_vocab is None else torch.tensor(loss_vocab, device=device)
        self.trie = trie
        self.level_sizes = level_sizes  # per-level softmax (loss_vocab "level") over loss_vocab's ids

    def run(
        self,
        model: torch.nn.Module,
        plan: StagePlan,
        *,
        resume: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        interrupt_after: int | None = None,
    ) -> StageState:
        """Train ``model`` through ``plan`` (from ``resume``'s checkpoint if given); returns the
        final state. ``extra`` is saved with every checkpoint (what a later stage resumes from)."""
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=plan.lr, weight_decay=self.config.weight_decay, fused=self.device.type == "cuda"
        )
        scheduler = lr_scheduler(optimizer, plan)
        state = StageState(plan.stage)
        if resume is not None:
            state = restore(resume, model, optimizer, scheduler)
            logger.info("resumed stage %s at step %d (epoch %d)", plan.stage, state.step, state.epoch)
        self.world.broadcast_weights(model)
        model.train()
        bar = progress(
            total=plan.total_steps,
            initial=state.step,
            desc=f"fine-tune {plan.stage}",
            unit="step",
            disable=not self.world.is_main,
        )
        stop = state.step >= plan.total_steps or state.stopped in ("early_stop", "time_budget")
        try:
            while not stop:
                order = random.Random(f"{self.config.seed}:{plan.stage}:{state.epoch}")
                batches = list(length_bucketed_batches(plan.data, self.config.batch_size, order))
                for index in range(state.batch_in_epoch, len(batches)):
                    started = time.perf_counter()
                    loss = self._backward(model, batches[index], state)
                    state.batch_in_epoch = index + 1
                    if state.micro % self.config.grad_accum:
                        state.train_s += time.perf_counter() - started
                        continue
                    self._optimizer_step(params, optimizer, scheduler, loss, state, started)
                    bar.set_postfix(
                        loss=f"{state.loss_ema:.3f}", tok_s=f"{state.tokens / max(state.train_s, 1e-9):.0f}"
                    )
                    bar.update(1)
                    stop = self._after_step(model, plan, state, (optimizer, scheduler), extra or {})
                    if interrupt_after is not None and state.step == interrupt_after and not stop:
                        raise TrainingInterrupted(f"interrupted after step {state.step}")
                    if stop:
                        break
                else:
                    state.epoch += 1
                    state.batch_in_epoch = 0
        finally:
            bar.close()
        return state

    def _backward(self, model: torch.nn.Module, batch: list[Encoded], state: StageState) -> torch.Tensor:
        """This process's share of one micro-batch's loss (scaled for gradient accumulation),
        back-propagated: its slice's summed loss over the whole batch's labelled positions."""
        config, device = self.config, self.device
        state.tokens += sum(len(e.input_ids) for e in batch)  # the real tokens of the global batch
        mine = self.world.shard(batch)
        total, count = torch.zeros((), device=device), 0
        if mine:  # a batch smaller than the world leaves some processes nothing
            cpu = collate_left(mine, self.pad_id)
            inputs = {k: v.to(device, non_blocking=True) for k, v in cpu.items()}
            with autocast_for(device, config.precision):
                total, count = token_loss_sum(
                    model,
                    inputs,
                    vocab_ids=self.loss_vocab,
                    trie=self.trie,
                    also_plain=config.loss_vocab == "sid+trie",
                    embedding_dropout=config.embedding_dropout,
                    level_sizes=self.level_sizes,
                )
        loss = total / max(self.world.sum_int(count), 1)
        loss = loss / config.grad_accum
        if loss.requires_grad:
            loss.backward()
        state.micro += 1
        return loss

    def _optimizer_step(
        self,
        params: list[torch.nn.Parameter],
        optimizer: Any,
        scheduler: Any,
        loss: torch.Tensor,
        state: StageState,
        started: float,
    ) -> None:
        self.world.sync_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        value = self.world.sum_float(loss.detach()) * self.config.grad_accum
        state.losses.append(value)
        state.loss_ema = value if state.loss_ema is None else 0.95 * state.loss_ema + 0.05 * value
        state.train_s += time.perf_counter() - started

    def _after_step(
        self,
        model: torch.nn.Module,
        plan: StagePlan,
        state: StageState,
        optimizers: tuple[Any, Any],
        extra: dict[str, Any],
    ) -> bool:
        """Time budget, validation and checkpoint after an optimizer step; True when the stage ends.

        The main process decides (its clock, its validation) and every process follows."""
        config = self.config
        done = state.step >= plan.total_steps
        if self.world.is_main:
            if plan.max_train_s is not None and state.train_s >= plan.max_train_s and not done:
                state.stopped, done = "time_budget", True
            every, validator = config.val_every, plan.validator
            validate_now = validator is not None and every and (state.step % every == 0 or done)
            if validate_now and validator is not None and self.validate(model, validator, state):
                state.stopped, done = "early_stop", True
        done, state.stopped = self.world.main_decides((done, state.stopped))
        checkpoint_now = config.checkpoint_every and (state.step % config.checkpoint_every == 0 or done)
        if checkpoint_now and self.world.is_main:
            self.checkpoints.save_last(model, *optimizers, state, extra)
        return done

    def validate(self, model: torch.nn.Module, validator: Validator, state: StageState) -> bool:
        """Score the model, keep the best weights; True when patience has run out."""
        started = time.perf_counter()
        metrics = validator(model)
        key = f"{self.config.val_metric}@{validator.k}"
        point = {"stage": state.stage, "step": state.step, **metrics, "wall_s": time.perf_counter() - started}
        state.val_curve.append(point)  # type: ignore[arg-type]
        logger.info("validation at %s step %d: %s", state.stage, state.step, metrics)
        if state.stage != MAIN:
            return False
        if state.best_metric is None or metrics[key] > state.best_metric + self.config.min_delta:
            state.best_metric, state.best_step, state.bad_evals = metrics[key], state.step, 0
            if self.config.keep_best:
                self.checkpoints.save_best(model, state)
            return False
        state.bad_evals += 1
        return self.config.patience is not None and state.bad_evals >= self.config.patience
