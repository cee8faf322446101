"""What trains in each stage, and how it folds back into a plain checkpoint that vLLM serves.

Stage 1 gives the model LoRA adapters, plus the semantic-ID rows of the (tied) embedding
matrix through peft's ``trainable_token_indices``; with ``full_finetune`` every weight trains
instead (LC-Rec's recipe). The annealing stage (EAGER-LLM) adds a fresh LoRA to the merged
stage-1 model. ``merge_and_unload`` folds adapters and trained rows back into the weights.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, cast

from transformers import PreTrainedModel

from training.train_config import TrainConfig

logger = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_config(config: TrainConfig, sid_ids: list[int], tied: bool) -> Any:
    """LoRA on every attention and MLP projection, and the ID tokens' embedding rows trainable."""
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


def with_lora(model: PreTrainedModel, config: TrainConfig, sid_ids: list[int], tied: bool) -> Any:
    """``model`` wrapped with fresh LoRA adapters (the peft model)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(config, sid_ids, tied))


def stage1_model(model: PreTrainedModel, config: TrainConfig, sid_ids: list[int], tied: bool) -> Any:
    """Stage 1 trains LoRA adapters plus the ID-token rows, or with ``full_finetune`` every weight."""
    if config.full_finetune:
        model.requires_grad_(True)
        logger.info("full fine-tuning: %d trainable parameters", model.num_parameters())
        return model
    peft_model = with_lora(model, config, sid_ids, tied)
    peft_model.print_trainable_parameters()
    return peft_model


def merge(peft_model: Any) -> PreTrainedModel:
    """The plain transformers model with the adapters folded into its weights."""
    # merge_and_unload returns the base transformers model, typed as a plain Module
    return cast(PreTrainedModel, peft_model.merge_and_unload())


def save_merged(model: PreTrainedModel, tokenizer: Any, path: Path) -> None:
    """Save an fp32 safetensors checkpoint with its tokenizer; ``path`` is replaced only once complete."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.float().save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
