"""LoRA fine-tuning of the base LLM on a task mixture, an optional annealing stage, then merge.

Stage 1 trains on the task mixture of ``training.tasks`` (next-item alone by default: history
in, the next item's semantic ID out; optionally ID<->title alignment, multi-scale ID
reconstruction, masked-item, BPR and negative-sampling tasks). Only the answer tokens carry
loss. The semantic-ID tokens are new rows of the (tied) embedding matrix, trained through
peft's ``trainable_token_indices`` while the rest of the model gets LoRA adapters;
``merge_and_unload`` folds both back into a plain checkpoint that vLLM serves. With
``full_finetune`` stage 1 trains every weight instead (LC-Rec's recipe, not the default).

Stage 2 (``anneal``, EAGER-LLM's annealing adapter) merges stage 1, adds a fresh LoRA and
trains it briefly on next-item only with a cosine learning rate decaying to 0, then merges
again.

Robustness: checkpoints every ``checkpoint_every`` steps hold the trainable weights, the
optimizer, the scheduler, the step, the position in the (seeded, per-epoch) data order and
the torch RNG, so ``resume`` continues exactly where a run stopped. With ``val_every`` the
model is scored every N steps by Recall@``val_k`` on a fixed sample of validation users
through the HF constrained engine (``model.hf_engine``; the validation targets are used only
for this metric); the best weights are kept and training stops after ``patience``
evaluations without improvement.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from model.catalog import Catalog
from model.progress import progress
from model.trie import CompiledTrie
from training.base_model import (
    TINY,
    add_sid_tokens,
    build_scratch_model,
    build_tiny_model,
    resolve_base_model,
    sid_token_ids,
)
from training.data import InteractionData, leave_one_out
from training.devices import autocast_for, pick_device
from training.dropout import add_dropout
from training.encoding import (
    SEQUENCE,
    Encoded,
    collate_left,
    encode_samples,
    encode_sequences,
    length_bucketed_batches,
    prompt_text,
    tiny_corpus,
    token_loss,
)
from training.sid_alignment import (
    CODEBOOKS_FILE,
    SidCodebooks,
    init_aligned_sid_embeddings,
    init_codebook_sid_embeddings,
)
from training.tasks import NEXT_ITEM, TaskContext, build_mixture, training_sequences
from training.train_config import SCRATCH, TrainConfig
from training.validation import Validator, validation_sample

logger = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MERGED_DIR = "merged"
STAGE1_DIR = "stage1_merged"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
RUN_CATALOG = "catalog.json"
RUN_TRIE = "trie.npz"
RUN_REPORT = "train_report.json"
MAIN, ANNEAL = "main", "anneal"
# Config fields a resumed run may change (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("max_train_s", "device", "checkpoint_every")


class TrainingInterrupted(RuntimeError):
    """Raised by ``train(..., interrupt_after=N)`` right after the step-N checkpoint (tests)."""


# ---------------------------------------------------------------------------------------------
# The training loop and its checkpoints


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
    val_curve: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped: str = "max_steps"


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ValueError(f"checkpoint holds weights this model lacks, e.g. {missing[0]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))


def _atomic_save(payload: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _lr_lambda(kind: str, total: int, warmup_ratio: float) -> Any:
    warmup = max(1, int(total * warmup_ratio))

    def factor(s: int) -> float:
        ramp = min(1.0, (s + 1) / warmup)
        progress = min(1.0, max(0.0, (s - warmup) / max(1, total - warmup)))
        if kind == "cosine":
            return ramp * 0.5 * (1.0 + math.cos(math.pi * progress))
        return ramp * max(0.0, (total - s) / max(1, total - warmup))

    return factor


@dataclass
class StagePlan:
    stage: str
    data: list[Encoded]
    total_steps: int
    lr: float
    schedule: str
    warmup_ratio: float
    validator: Validator | None
    max_train_s: float | None


class Trainer:
    """Runs one stage's optimizer loop with checkpoints, validation and early stopping."""

    def __init__(
        self,
        config: TrainConfig,
        out_dir: Path,
        device: torch.device,
        pad_id: int,
        loss_vocab: list[int] | None = None,
    ) -> None:
        self.config = config
        self.ckpt_dir = out_dir / CHECKPOINT_DIR
        self.device = device
        self.pad_id = pad_id
        self.loss_vocab = None if loss_vocab is None else torch.tensor(loss_vocab, device=device)

    def save_best(self, model: torch.nn.Module, state: StageState) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "stage": state.stage,
                "step": state.step,
                "metric": state.best_metric,
                "weights": _trainable(model),
            },
            self.ckpt_dir / BEST_CHECKPOINT,
        )

    def save_last(
        self, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: StageState, extra: dict[str, Any]
    ) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "config": self.config.model_dump(),
                "state": asdict(state),
                "weights": _trainable(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "extra": extra,
            },
            self.ckpt_dir / LAST_CHECKPOINT,
        )

    def run(
        self,
        model: torch.nn.Module,
        plan: StagePlan,
        *,
        resume: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        interrupt_after: int | None = None,
    ) -> StageState:
        config, device = self.config, self.device
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=plan.lr, weight_decay=config.weight_decay, fused=device.type == "cuda"
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(plan.schedule, plan.total_steps, plan.warmup_ratio)
        )
        state = StageState(plan.stage)
        if resume is not None:
            state = StageState(**resume["state"])
            _load_trainable(model, resume["weights"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            _set_rng_state(resume["rng"])
            logger.info("resumed stage %s at step %d (epoch %d)", plan.stage, state.step, state.epoch)
        extra = extra or {}
        model.train()
        every = config.val_every
        bar = progress(
            total=plan.total_steps, initial=state.step, desc=f"fine-tune {plan.stage}", unit="step"
        )
        stop = state.step >= plan.total_steps or state.stopped in ("early_stop", "time_budget")
        while not stop:
            order = random.Random(f"{config.seed}:{plan.stage}:{state.epoch}")
            batches = list(length_bucketed_batches(plan.data, config.batch_size, order))
            for index in range(state.batch_in_epoch, len(batches)):
                started = time.perf_counter()
                cpu = collate_left(batches[index], self.pad_id)
                state.tokens += int(cpu["attention_mask"].sum())
                inputs = {k: v.to(device, non_blocking=True) for k, v in cpu.items()}
                with autocast_for(device, config.precision):
                    loss = token_loss(
                        model, inputs, vocab_ids=self.loss_vocab, embedding_dropout=config.embedding_dropout
                    )
                    loss = loss / config.grad_accum
                loss.backward()
                state.batch_in_epoch = index + 1
                state.micro += 1
                if state.micro % config.grad_accum:
                    state.train_s += time.perf_counter() - started
                    continue
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                value = float(loss.detach()) * config.grad_accum
                state.loss_ema = value if state.loss_ema is None else 0.95 * state.loss_ema + 0.05 * value
                state.train_s += time.perf_counter() - started
                bar.set_postfix(
                    loss=f"{state.loss_ema:.3f}", tok_s=f"{state.tokens / max(state.train_s, 1e-9):.0f}"
                )
                bar.update(1)
                done = state.step >= plan.total_steps
                if plan.max_train_s is not None and state.train_s >= plan.max_train_s and not done:
                    state.stopped, done = "time_budget", True
                validate_now = plan.validator is not None and every and (state.step % every == 0 or done)
                if validate_now and self.validate(model, plan.validator, state):  # type: ignore[arg-type]
                    state.stopped, done = "early_stop", True
                if config.checkpoint_every and (state.step % config.checkpoint_every == 0 or done):
                    self.save_last(model, optimizer, scheduler, state, extra)
                if interrupt_after is not None and state.step == interrupt_after and not done:
                    bar.close()
                    raise TrainingInterrupted(f"interrupted after step {state.step}")
                if done:
                    stop = True
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
        bar.close()
        return state

    def validate(self, model: torch.nn.Module, validator: Validator, state: StageState) -> bool:
        """Score the model, keep the best weights; True when patience has run out."""
        started = time.perf_counter()
        metrics = validator(model)
        key = f"recall@{validator.k}"
        point = {"stage": state.stage, "step": state.step, **metrics, "wall_s": time.perf_counter() - started}
        state.val_curve.append(point)  # type: ignore[arg-type]
        logger.info("validation at %s step %d: %s", state.stage, state.step, metrics)
        if state.stage != MAIN:
            return False
        if state.best_metric is None or metrics[key] > state.best_metric + self.config.min_delta:
            state.best_metric, state.best_step, state.bad_evals = metrics[key], state.step, 0
            if self.config.keep_best:
                self.save_best(model, state)
            return False
        state.bad_evals += 1
        return self.config.patience is not None and state.bad_evals >= self.config.patience


def _lora(config: TrainConfig, sid_ids: list[int], tied: bool) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=LORA_TARGETS,
        trainable_token_indices={"embed_tokens": sid_ids},
        ensure_weight_tying=tied,
        task_type="CAUSAL_LM",
    )


def stage1_model(model: PreTrainedModel, config: TrainConfig, sid_ids: list[int], tied: bool) -> Any:
    """Stage 1 trains LoRA adapters plus the ID-token rows, or with ``full_finetune`` every weight."""
    if config.full_finetune:
        model.requires_grad_(True)
        logger.info("full fine-tuning: %d trainable parameters", model.num_parameters())
        return model
    from peft import get_peft_model

    peft_model = get_peft_model(model, _lora(config, sid_ids, tied))
    peft_model.print_trainable_parameters()
    return peft_model


def _merge(peft_model: Any) -> PreTrainedModel:
    # merge_and_unload returns the base transformers model, typed as a plain Module
    return cast(PreTrainedModel, peft_model.merge_and_unload())


def _steps(n: int, config: TrainConfig, epochs: float) -> int:
    per_epoch = math.ceil(n / (config.batch_size * config.grad_accum))
    return max(1, math.ceil(per_epoch * epochs))


def _check_resumable(saved: dict[str, Any], config: TrainConfig) -> None:
    current = config.model_dump()
    changed = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if changed:
        raise ValueError(
            f"cannot resume: the checkpoint was made with different {', '.join(changed)} "
            "(start a fresh run or use the checkpoint's config)"
        )


def _codebooks_file(tokenizer_dir: Path) -> Path:
    """The tokenizer's codebooks, which ``scratch_sid_init='codebook'`` needs."""
    path = tokenizer_dir / CODEBOOKS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"scratch_sid_init='codebook' needs {path}: tokenize with \"align\": true, or use 'random'"
        )
    return path


def _save_merged(model: PreTrainedModel, tokenizer: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.float().save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


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
    removed. ``interrupt_after`` raises :class:`TrainingInterrupted` after that step's
    checkpoint of stage ``interrupt_stage`` (``main`` or ``anneal``; to test resuming).
    """
    from peft import get_peft_model

    started = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    catalog = Catalog.load(tokenizer_dir / RUN_CATALOG)
    if config.base_model == SCRATCH and config.scratch_sid_init == "codebook":
        _codebooks_file(tokenizer_dir)  # fail before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    checkpoint: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {ckpt_path} does not exist")
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        _check_resumable(checkpoint["config"], config)
    else:
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)

    examples = leave_one_out(data, max_history=config.history_len).train
    rng = random.Random(config.seed)
    if config.max_train_examples is not None and len(examples) > config.max_train_examples:
        examples = rng.sample(examples, config.max_train_examples)
    if not examples:
        raise ValueError(f"dataset {data.name} has no training examples (every user needs >= 3 items)")
    ctx = TaskContext.build(data, catalog, examples, tokenizer_dir, config.history_len)
    mixture = build_mixture(ctx, config.tasks, config.seed, with_titles=config.with_titles)

    if config.base_model == TINY:
        corpus = tiny_corpus(examples, catalog, config)
        for samples in mixture.values():
            corpus.extend(prompt_text(s, catalog, config) for s in samples[:200])
            corpus.extend(s.answer_text for s in samples[:200] if s.answer_text is not None)
        base_path = build_tiny_model(out_dir / "base", corpus, seed=config.seed)
    elif config.base_model == SCRATCH:
        shape = config.scratch
        base_path = build_scratch_model(
            out_dir / "base",
            hidden=shape.hidden,
            layers=shape.layers,
            heads=shape.heads,
            intermediate=shape.intermediate,
            seed=config.seed,
        )
    else:
        base_path = resolve_base_model(config.base_model)
    device = pick_device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    sid_ids = add_sid_tokens(model, tokenizer, catalog.scheme, random_init=config.base_model == SCRATCH)
    tied = bool(model.config.tie_word_embeddings)
    if config.base_model == SCRATCH:
        aligned_r2 = None  # random weights: there is no LLM embedding space to align with
        if config.scratch_sid_init == "codebook":
            init_codebook_sid_embeddings(
                model,
                SidCodebooks.load(_codebooks_file(tokenizer_dir)),
                sid_token_ids(tokenizer, catalog.scheme),
                seed=config.seed,
            )
    elif (tokenizer_dir / CODEBOOKS_FILE).is_file():
        aligned_r2 = init_aligned_sid_embeddings(
            model,
            tokenizer,
            SidCodebooks.load(tokenizer_dir / CODEBOOKS_FILE),
            [item.sid for item in catalog],
            [item.title for item in catalog],
            sid_token_ids(tokenizer, catalog.scheme),
        )
    else:
        aligned_r2 = None
        logger.info(
            "no %s in %s: semantic-ID tokens start at the mean embedding", CODEBOOKS_FILE, tokenizer_dir
        )

    encode_started = time.perf_counter()
    encoded: list[Encoded] = []
    if config.objective == "sequence":  # the next-item task as packed whole sequences
        sequences = list(training_sequences(data).values())
        packed = encode_sequences(sequences, catalog, tokenizer, config)
        if config.max_train_examples is not None and len(packed) > config.max_train_examples:
            packed = rng.sample(packed, config.max_train_examples)
        encoded.extend(packed)
        mixture = {task: samples for task, samples in mixture.items() if task != NEXT_ITEM}
    for samples in mixture.values():
        encoded.extend(encode_samples(samples, catalog, tokenizer, config))
    encode_s = time.perf_counter() - encode_started
    task_examples = {task: len(samples) for task, samples in mixture.items()}
    if config.objective == "sequence":
        task_examples = {SEQUENCE: len(packed), **task_examples}
    next_item = [e for e in encoded if e.task in (NEXT_ITEM, SEQUENCE)]
    total_steps = config.max_steps or _steps(len(encoded), config, config.epochs)
    validator = None
    if config.val_every:
        validator = Validator(
            validation_sample(data, config),
            catalog,
            CompiledTrie.load(tokenizer_dir / RUN_TRIE),
            tokenizer,
            config,
            device,
        )
    trainer = Trainer(
        config, out_dir, device, int(tokenizer.pad_token_id), sid_ids if config.loss_vocab == "sid" else None
    )
    logger.info(
        "training %s on %d examples %s: %d steps (batch %d x accum %d) on %s",
        config.base_model,
        len(encoded),
        task_examples,
        total_steps,
        config.batch_size,
        config.grad_accum,
        device,
    )

    resume_stage = checkpoint["state"]["stage"] if checkpoint is not None else None
    resumed_from = checkpoint["state"]["step"] if checkpoint is not None else None
    if resume_stage == ANNEAL:
        main_state = StageState(**checkpoint["extra"]["main_state"])  # type: ignore[index]
        if not (out_dir / STAGE1_DIR).is_dir():
            raise FileNotFoundError(f"cannot resume the annealing stage: {out_dir / STAGE1_DIR} is missing")
        stage1 = cast(
            PreTrainedModel,
            AutoModelForCausalLM.from_pretrained(str(out_dir / STAGE1_DIR), dtype=torch.float32),
        )
    else:
        stage_model = stage1_model(model, config, sid_ids, tied).to(device)
        add_dropout(stage_model, hidden=config.hidden_dropout, attention=config.attention_dropout)
        plan = StagePlan(
            MAIN, encoded, total_steps, config.lr, config.lr_schedule, config.warmup_ratio, validator,
            config.max_train_s,
        )  # fmt: skip
        main_state = trainer.run(
            stage_model,
            plan,
            resume=checkpoint,
            interrupt_after=interrupt_after if interrupt_stage == MAIN else None,
        )
        best = out_dir / CHECKPOINT_DIR / BEST_CHECKPOINT
        if config.keep_best and main_state.best_step is not None and main_state.best_step != main_state.step:
            saved = torch.load(best, map_location="cpu", weights_only=False)
            _load_trainable(stage_model, saved["weights"])
            logger.info(
                "keeping the best weights: step %d (recall@%d %.4f)",
                saved["step"],
                config.val_k,
                saved["metric"],
            )
        stage1 = stage_model if config.full_finetune else _merge(stage_model)

    anneal_state: StageState | None = None
    if config.anneal:
        if resume_stage != ANNEAL and config.checkpoint_every:
            _save_merged(stage1, tokenizer, out_dir / STAGE1_DIR)  # what a resumed anneal starts from
        anneal_model = get_peft_model(stage1, _lora(config, sid_ids, tied)).to(device)
        plan = StagePlan(
            ANNEAL, next_item, config.anneal_steps, config.anneal_lr, "cosine", config.anneal_warmup_ratio,
            validator, None,
        )  # fmt: skip
        anneal_state = trainer.run(
            anneal_model,
            plan,
            resume=checkpoint if resume_stage == ANNEAL else None,
            extra={"main_state": asdict(main_state)},
            interrupt_after=interrupt_after if interrupt_stage == ANNEAL else None,
        )
        merged = _merge(anneal_model)
    else:
        merged = stage1

    merged_dir = out_dir / MERGED_DIR
    _save_merged(merged, tokenizer, merged_dir)
    shutil.rmtree(out_dir / STAGE1_DIR, ignore_errors=True)
    shutil.copy(tokenizer_dir / RUN_CATALOG, out_dir / RUN_CATALOG)
    shutil.copy(tokenizer_dir / RUN_TRIE, out_dir / RUN_TRIE)
    final_loss = anneal_state.loss_ema if anneal_state is not None else main_state.loss_ema
    report = {
        "dataset": data.name,
        "config": config.model_dump(),
        "examples": len(encoded),
        "task_examples": task_examples,
        "aligned_sid_init_r2": aligned_r2,
        "steps": main_state.step,
        "final_loss_ema": final_loss,
        "main_loss_ema": main_state.loss_ema,
        "tokens": main_state.tokens,
        "tokens_per_s": round(main_state.tokens / max(main_state.train_s, 1e-9), 1),
        "train_s": round(main_state.train_s, 2),
        "encode_s": round(encode_s, 2),
        "stopped": main_state.stopped,
        "val_curve": main_state.val_curve + (anneal_state.val_curve if anneal_state else []),
        "best_step": main_state.best_step,
        f"best_val_recall@{config.val_k}": main_state.best_metric,
        "resumed_from_step": resumed_from,
        "anneal": None
        if anneal_state is None
        else {
            "steps": anneal_state.step,
            "loss_ema": anneal_state.loss_ema,
            "tokens": anneal_state.tokens,
            "tokens_per_s": round(anneal_state.tokens / max(anneal_state.train_s, 1e-9), 1),
        },
        "device": str(device),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / RUN_REPORT).write_text(json.dumps(report, indent=2))
    logger.info(
        "fine-tuning done in %.0f s, final loss %.3f; merged model in %s",
        report["wall_s"],
        final_loss or 0,
        merged_dir,
    )
    return merged_dir
