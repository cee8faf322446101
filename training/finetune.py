"""Fine-tuning of the base LLM on a task mixture, an optional annealing stage, then merge.

Stage 1 trains on the task mixture of ``training.tasks`` (next-item alone by default: history
in, the next item's semantic ID out; optionally ID<->title alignment, multi-scale ID
reconstruction, masked-item, BPR and negative-sampling tasks). Only the answer tokens carry
loss. It trains LoRA adapters plus the semantic-ID rows of the embedding matrix, or with
``full_finetune`` every weight (``training.adapters``). Stage 2 (``anneal``, EAGER-LLM's
annealing adapter) merges stage 1, adds a fresh LoRA and trains it briefly on next-item only
with a cosine learning rate decaying to 0, then merges again into a plain checkpoint.

:func:`train` is the script over the parts: the examples (``training.run_data``), the starting
model (``training.run_model``), the optimizer loop with validation and early stopping
(``training.trainer``), resumable checkpoints (``training.checkpoint``) and the report
(``training.run_report``). Launched as several processes (``accelerate launch``) it trains
data-parallel (``training.data_parallel``): every process trains, the main one alone builds
the base model and writes checkpoints, the merged model and the report.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from model.catalog import Catalog
from model.trie import CompiledTrie
from training.adapters import merge, save_merged, stage1_model, with_lora
from training.base_model import sid_token_ids
from training.checkpoint import CHECKPOINT_DIR, Checkpoints, StageState
from training.data import InteractionData
from training.data_parallel import DataParallel, data_parallel
from training.dropout import add_dropout
from training.run_data import EncodedRun, encode_run, sample_tasks
from training.run_model import StartingModel, base_model_path, codebooks_file, starting_model
from training.run_report import run_report
from training.train_config import SCRATCH, TrainConfig
from training.trainer import ANNEAL, MAIN, StagePlan, Trainer, stage_steps
from training.trie_loss import TrieTargets
from training.validation import Validator, validation_sample

logger = logging.getLogger(__name__)

MERGED_DIR = "merged"
STAGE1_DIR = "stage1_merged"
RUN_CATALOG = "catalog.json"
RUN_TRIE = "trie.npz"
RUN_REPORT = "train_report.json"


@dataclass
class _Stages:
    """What both stages share: the run's settings, trainer, starting model, examples and validator."""

    config: TrainConfig
    out_dir: Path
    trainer: Trainer
    start: StartingModel
    run: EncodedRun
    validator: Validator | None
    world: DataParallel

    def main(self, checkpoint: dict[str, Any] | None, interrupt_after: int | None) -> tuple[StageState, Any]:
        """Stage 1 (resumed from ``checkpoint`` if given), ending on the best validated weights."""
        config, start = self.config, self.start
        model = stage1_model(start.model, config, start.sid_ids, start.tied).to(self.trainer.device)
        add_dropout(model, hidden=config.hidden_dropout, attention=config.attention_dropout)
        steps = config.max_steps or stage_steps(len(self.run.examples), config, config.epochs)
        plan = StagePlan(
            MAIN, self.run.examples, steps, config.lr, config.lr_schedule, config.warmup_ratio,
            self.validator, config.max_train_s,
        )  # fmt: skip
        logger.info(
            "training %s on %d examples %s: %d steps (batch %d x accum %d) on %s",
            config.base_model, len(self.run.examples), self.run.task_examples, steps, config.batch_size,
            config.grad_accum, self.trainer.device,
        )  # fmt: skip
        state = self.trainer.run(model, plan, resume=checkpoint, interrupt_after=interrupt_after)
        if config.keep_best and state.best_step is not None and state.best_step != state.step:
            saved = self.trainer.checkpoints.load_best(model)
            logger.info(
                "keeping the best weights: step %d (%s@%d %.4f)",
                saved["step"],
                config.val_metric,
                config.val_k,
                saved["metric"],
            )
        return state, model if config.full_finetune else merge(model)

    def main_from_disk(self, checkpoint: dict[str, Any]) -> tuple[StageState, PreTrainedModel]:
        """The finished stage 1 that an annealing checkpoint continues from."""
        state = StageState(**checkpoint["extra"]["main_state"])
        path = self.out_dir / STAGE1_DIR
        if not path.is_dir():
            raise FileNotFoundError(f"cannot resume the annealing stage: {path} is missing")
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        return state, cast(PreTrainedModel, model)

    def anneal(
        self,
        stage1: PreTrainedModel,
        main_state: StageState,
        checkpoint: dict[str, Any] | None,
        interrupt_after: int | None,
    ) -> tuple[StageState, PreTrainedModel]:
        """A fresh LoRA on the merged stage 1, trained on next-item with a cosine decay, merged."""
        config, start = self.config, self.start
        if checkpoint is None and config.checkpoint_every and self.world.is_main:
            save_merged(
                stage1, start.tokenizer, self.out_dir / STAGE1_DIR
            )  # what a resumed anneal starts from
        model = with_lora(stage1, config, start.sid_ids, start.tied).to(self.trainer.device)
        plan = StagePlan(
            ANNEAL, self.run.next_item, config.anneal_steps, config.anneal_lr, "cosine",
            config.anneal_warmup_ratio, self.validator, None,
        )  # fmt: skip
        extra = {"main_state": asdict(main_state)}
        state = self.trainer.run(model, plan, resume=checkpoint, extra=extra, interrupt_after=interrupt_after)
        return state, merge(model)


def train(
    data: InteractionData,
    tokenizer_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    interrupt_after: int | None = None,
    interrupt_stage: str = MAIN,
) -> Path:
    """Fine-tune, merge and save into ``out_dir/merged``; copies the catalog and trie alongside.

    ``resume`` continues from ``out_dir/checkpoints/last.pt`` (same config required, except
    ``max_train_s``, ``device`` and ``checkpoint_every``); without it any old checkpoints are
    removed. ``interrupt_after`` raises :class:`training.trainer.TrainingInterrupted` after that
    step's checkpoint of stage ``interrupt_stage`` (``main`` or ``anneal``; to test resuming).
    """
    started = time.perf_counter()
    world = data_parallel(config.device)
    try:
        return _train(
            data, tokenizer_dir, out_dir, config, world, resume, interrupt_after, interrupt_stage, started
        )
    finally:
        world.close()


def _train(
    data: InteractionData,
    tokenizer_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    world: DataParallel,
    resume: bool,
    interrupt_after: int | None,
    interrupt_stage: str,
    started: float,
) -> Path:
    """:func:`train` in one of the run's processes (``world``)."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    catalog = Catalog.load(tokenizer_dir / RUN_CATALOG)
    if config.base_model == SCRATCH and config.scratch_sid_init == "codebook":
        codebooks_file(tokenizer_dir)  # fail before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(out_dir / CHECKPOINT_DIR, config)
    # a fresh run's old checkpoints are removed by the main process alone
    checkpoint = checkpoints.start(resume) if resume or world.is_main else None

    samples = sample_tasks(data, catalog, tokenizer_dir, config)
    base_path = world.from_main(
        lambda: base_model_path(config, out_dir / "base", samples.examples, samples.mixture, catalog)
    )
    device = world.device(config.device)
    start = starting_model(base_path, config, catalog, tokenizer_dir)
    run = encode_run(data, samples, catalog, start.tokenizer, config)
    trie = CompiledTrie.load(tokenizer_dir / RUN_TRIE)
    validator = None
    if config.val_every and world.is_main:
        validator = Validator(validation_sample(data, config), catalog, trie, start.tokenizer, config, device)
    loss_vocab = start.sid_ids if config.loss_vocab in ("sid", "level") else None
    trie_targets = None
    if config.loss_vocab in ("trie", "sid+trie"):
        trie_targets = TrieTargets.build(sid_token_ids(start.tokenizer, catalog.scheme), trie, device)
    pad_id = int(start.tokenizer.pad_token_id)
    level_sizes = catalog.scheme.codebook_sizes if config.loss_vocab == "level" else None
    trainer = Trainer(config, checkpoints, device, pad_id, loss_vocab, trie_targets, world, level_sizes)
    stages = _Stages(config, out_dir, trainer, start, run, validator, world)

    resume_stage = checkpoint["state"]["stage"] if checkpoint is not None else None
    if checkpoint is not None and resume_stage == ANNEAL:
        main_state, merged = stages.main_from_disk(checkpoint)
    else:
        main_state, merged = stages.main(checkpoint, interrupt_after if interrupt_stage == MAIN else None)
    anneal_state: StageState | None = None
    if config.anneal:
        anneal_checkpoint = checkpoint if resume_stage == ANNEAL else None
        anneal_interrupt = interrupt_after if interrupt_stage == ANNEAL else None
        anneal_state, merged = stages.anneal(merged, main_state, anneal_checkpoint, anneal_interrupt)

    merged_dir = out_dir / MERGED_DIR
    if not world.is_main:
        world.barrier()  # returns once the main process has written the run directory
        return merged_dir
    save_merged(merged, start.tokenizer, merged_dir)
    shutil.rmtree(out_dir / STAGE1_DIR, ignore_errors=True)
    shutil.copy(tokenizer_dir / RUN_CATALOG, out_dir / RUN_CATALOG)
    shutil.copy(tokenizer_dir / RUN_TRIE, out_dir / RUN_TRIE)
    report = run_report(
        data.name, config, run, (main_state, anneal_state), aligned_r2=start.aligned_r2,
        resumed_from=checkpoint["state"]["step"] if checkpoint is not None else None, device=device,
        started=started,
    )  # fmt: skip
    (out_dir / RUN_REPORT).write_text(json.dumps(report, indent=2))
    final_loss = report["final_loss_ema"] or 0
    logger.info(
        "fine-tuning done in %.0f s, final loss %.3f; merged model in %s",
        report["wall_s"],
        final_loss,
        merged_dir,
    )
    world.barrier()
    return merged_dir
