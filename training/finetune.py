"""LoRA fine-tuning of the base LLM on the next-item task, then merge.

History (semantic IDs, optionally titles) in, the next item's semantic ID out. Only the
answer tokens carry loss. The semantic-ID tokens are new rows of the (tied) embedding
matrix, trained through peft's ``trainable_token_indices`` while the rest of the model gets
LoRA adapters; ``merge_and_unload`` folds both back into a plain checkpoint that vLLM serves.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from pydantic import BaseModel, Field
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from model.catalog import Catalog
from model.prompts import next_item_prompt
from model.topk import PromptBuilder, PromptSettings
from training.base_model import TINY, add_sid_tokens, build_tiny_model, resolve_base_model, sid_token_ids
from training.data import Example, InteractionData, leave_one_out
from training.sid_alignment import CODEBOOKS_FILE, SidCodebooks, init_aligned_sid_embeddings

logger = logging.getLogger(__name__)

IGNORE = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MERGED_DIR = "merged"
RUN_CATALOG = "catalog.json"
RUN_TRIE = "trie.npz"
RUN_REPORT = "train_report.json"


class TrainConfig(BaseModel):
    base_model: str = Field("smollm2", description="'smollm2', 'tiny' or a local HF checkpoint path")
    epochs: float = 1.0
    max_steps: int | None = None
    max_train_examples: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    history_len: int = 20
    max_prompt_tokens: int = 512
    with_titles: bool = True
    # Left-pad prompts to this many tokens (a multiple of the serving KV block size: 32 on CPU,
    # 16 on GPU) so that beams share every prompt block; recorded in the bundle's manifest.
    prompt_align: int = Field(default=32, ge=1)
    seed: int = 0
    device: str = "auto"

    def prompt_settings(self) -> PromptSettings:
        """The prompt format, shared with serving through the bundle manifest."""
        return PromptSettings(
            history_len=self.history_len,
            max_prompt_tokens=self.max_prompt_tokens,
            with_titles=self.with_titles,
            align=self.prompt_align,
        )


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def encode_example(
    example: Example, catalog: Catalog, tokenizer: object, config: TrainConfig
) -> Encoded | None:
    """Prompt ids + answer ids (the target's SID tokens, then EOS); loss only on the answer."""
    target = catalog.get(example.target)
    if target is None:
        return None
    prompt = PromptBuilder(catalog, tokenizer, config.prompt_settings()).encode(example.history)
    answer = list(tokenizer.convert_tokens_to_ids(catalog.scheme.tokens(target.sid)))  # type: ignore[attr-defined]
    answer.append(tokenizer.eos_token_id)  # type: ignore[attr-defined]
    return Encoded(prompt + answer, [IGNORE] * len(prompt) + answer)


def length_bucketed_batches(
    data: Sequence[Encoded], batch_size: int, rng: random.Random
) -> Iterator[list[Encoded]]:
    """Batches of similar length (little padding), in random order."""
    order = sorted(range(len(data)), key=lambda i: (len(data[i].input_ids), rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    for batch in batches:
        yield [data[i] for i in batch]


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


def tiny_corpus(
    examples: Sequence[Example], catalog: Catalog, config: TrainConfig, limit: int = 2000
) -> list[str]:
    """Texts the tiny model's tokenizer is trained on: the prompts it will actually read."""
    texts = [item.title for item in catalog]
    for example in examples[:limit]:
        history = [catalog[i] for i in example.history if i in catalog][-config.history_len :]
        texts.append(next_item_prompt(history, catalog.scheme, with_titles=config.with_titles))
    return texts


def train(data: InteractionData, tokenizer_dir: Path, out_dir: Path, config: TrainConfig) -> Path:
    """Fine-tune, merge and save into ``out_dir/merged``; copies the catalog and trie alongside."""
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    catalog = Catalog.load(tokenizer_dir / RUN_CATALOG)
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = leave_one_out(data, max_history=config.history_len).train
    rng = random.Random(config.seed)
    if config.max_train_examples is not None and len(examples) > config.max_train_examples:
        examples = rng.sample(examples, config.max_train_examples)
    if not examples:
        raise ValueError(f"dataset {data.name} has no training examples (every user needs >= 3 items)")

    if config.base_model == TINY:
        base_path = build_tiny_model(
            out_dir / "base", tiny_corpus(examples, catalog, config), seed=config.seed
        )
    else:
        base_path = resolve_base_model(config.base_model)
    device = pick_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    sid_ids = add_sid_tokens(model, tokenizer, catalog.scheme)
    if (tokenizer_dir / CODEBOOKS_FILE).is_file():
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
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=LORA_TARGETS,
        trainable_token_indices={"embed_tokens": sid_ids},
        ensure_weight_tying=bool(model.config.tie_word_embeddings),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora).to(device)
    peft_model.print_trainable_parameters()

    encoded = [e for e in (encode_example(x, catalog, tokenizer, config) for x in examples) if e is not None]
    steps_per_epoch = math.ceil(len(encoded) / (config.batch_size * config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    warmup = max(1, int(total_steps * config.warmup_ratio))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total_steps - s) / max(1, total_steps - warmup)),
    )
    logger.info(
        "training %s on %d examples: %d steps (batch %d x accum %d) on %s",
        config.base_model,
        len(encoded),
        total_steps,
        config.batch_size,
        config.grad_accum,
        device,
    )
    peft_model.train()
    pad_id = tokenizer.pad_token_id
    step = 0
    tokens_seen = 0
    loss_ema: float | None = None
    bar = tqdm(total=total_steps, desc="fine-tune", unit="step")
    loop_started = time.perf_counter()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    # Micro-batches are counted across epochs: an epoch with fewer batches than grad_accum
    # (or not a multiple of it) must still reach an optimizer step instead of looping forever.
    micro = 0
    while step < total_steps:
        batches = length_bucketed_batches(encoded, config.batch_size, rng)
        for batch in batches:
            inputs = {key: value.to(device) for key, value in collate(batch, pad_id).items()}
            with autocast:
                loss = peft_model(**inputs).loss / config.grad_accum
            loss.backward()
            tokens_seen += int(inputs["attention_mask"].sum())
            micro += 1
            if micro % config.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(peft_model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach()) * config.grad_accum
            loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
            elapsed = time.perf_counter() - loop_started
            bar.set_postfix(loss=f"{loss_ema:.3f}", tok_s=f"{tokens_seen / elapsed:.0f}")
            bar.update(1)
            if step >= total_steps:
                break
    bar.close()

    # merge_and_unload returns the base transformers model, typed as a plain Module
    merged = cast(PreTrainedModel, peft_model.merge_and_unload())
    merged_dir = out_dir / MERGED_DIR
    shutil.rmtree(merged_dir, ignore_errors=True)
    merged.float().save_pretrained(merged_dir, safe_serialization=True)
    tokenizer.save_pretrained(merged_dir)
    shutil.copy(tokenizer_dir / RUN_CATALOG, out_dir / RUN_CATALOG)
    shutil.copy(tokenizer_dir / RUN_TRIE, out_dir / RUN_TRIE)
    report = {
        "dataset": data.name,
        "config": config.model_dump(),
        "examples": len(encoded),
        "aligned_sid_init_r2": aligned_r2,
        "steps": step,
        "final_loss_ema": loss_ema,
        "tokens": tokens_seen,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / RUN_REPORT).write_text(json.dumps(report, indent=2))
    logger.info(
        "fine-tuning done in %.0f s, final loss %.3f; merged model in %s",
        report["wall_s"],
        loss_ema or 0,
        merged_dir,
    )
    return merged_dir
