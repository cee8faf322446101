"""The fine-tuning configuration: what ``genrec train --config`` reads and the run report records."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.prompts import COMPACT
from model.topk import PromptSettings
from training.task_mixture import NEXT_ITEM, TaskMixture

SCRATCH = "scratch"


# The ``genrec train`` option of a field whose name differs from ``--field-name`` (a bool's
# ``--on/--off`` pair included); read by ``training.config_options``.
CLI = "cli"


class ScratchShape(BaseModel):
    """The Llama that ``base_model="scratch"`` trains from random weights over the ID vocabulary.

    TIGER-sized by default (a few million parameters). Head size 64 (hidden / heads) is what
    vLLM's CPU attention supports.
    """

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(default=256, ge=64, description="scratch model: hidden size (64 x heads)")
    layers: int = Field(default=4, ge=1, description="scratch model: decoder layers")
    heads: int = Field(default=4, ge=1, description="scratch model: attention heads (hidden / 64)")
    intermediate: int = Field(default=1024, ge=64, description="scratch model: MLP width")

    @model_validator(mode="after")
    def _head_size(self) -> ScratchShape:
        if self.hidden % self.heads or self.hidden // self.heads != 64:
            raise ValueError(
                f"hidden / heads must be 64 (vLLM CPU attention), got {self.hidden}/{self.heads}"
            )
        return self


class TrainConfig(BaseModel):
    """Every fine-tuning setting: what ``--config FILE`` holds, and ``genrec train``'s options
    (derived from these fields, their types, defaults and descriptions)."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "smollm2",
        description="'smollm2', 'scratch' (a small Llama over the IDs), 'tiny' or a local HF checkpoint",
    )
    objective: Literal["sequence", "prompt"] = Field(
        "sequence",
        description="sequence: each user's training sequence is one packed example with the loss on "
        "every item's ID (compact format only); prompt: one example per target",
    )
    prompt_format: Literal["compact", "lines"] = Field(
        "compact", description="compact (IDs only, the served prompt) or lines (numbered history lines)"
    )
    loss_vocab: Literal["sid", "level", "trie", "sid+trie", "full"] = Field(
        "sid",
        description="sid: the softmax runs over the semantic-ID tokens only (all the constrained "
        "search ever scores); level: over the tokens of the label's own ID level (cheaper when a "
        "level holds a token per item); trie: over the valid children of each ID token's prefix in the "
        "trie (an item's loss is minus its served score); sid+trie: the sum of both; full: over "
        "the whole vocabulary",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="autocast precision (auto: bf16 where the device computes it natively)"
    )
    embedding_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the input embeddings")
    hidden_dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on each attention and MLP block's output (training/dropout.py)"
    )
    attention_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the attention weights")
    scratch: ScratchShape = Field(
        default_factory=ScratchShape, description="the scratch model's shape (base_model 'scratch')"
    )
    scratch_sid_init: Literal["random", "codebook"] = Field(
        "random",
        description="scratch model only: 'codebook' points the ID tokens' random embeddings along "
        "the tokenizer's codebook centroids (training/sid_alignment.py), 'random' leaves them be",
    )
    epochs: float = Field(1.0, gt=0, description="passes over the examples in stage 1")
    max_steps: int | None = Field(None, ge=1, description="stage-1 optimizer steps (overrides epochs)")
    max_train_examples: int | None = Field(
        None,
        ge=1,
        description="a random sample of next-item examples",
        json_schema_extra={CLI: "--max-examples"},
    )
    batch_size: int = Field(16, ge=1, description="examples per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="stage-1 peak learning rate (AdamW)")
    lr_schedule: Literal["linear", "cosine"] = Field(
        "linear", description="decay after the warmup, to 0 at the last step"
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="fraction of stage 1 spent warming up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    full_finetune: bool = Field(
        False,
        # LC-Rec's recipe, for comparing the two on a GPU. Not the default: on the demo's synthetic
        # data and settings the tiny model reached test Recall@10 0.167 with it against 0.243
        # with LoRA (benchmarks/results/demo_finetune_modes.json).
        description="train every weight in stage 1 instead of LoRA adapters (the annealing stage "
        "stays a LoRA adapter either way)",
        json_schema_extra={CLI: "--full-finetune/--lora"},
    )
    lora_r: int = Field(
        16, ge=1, description="LoRA rank (genrec train --lora-r R: lora_alpha 2 R unless set)"
    )
    lora_alpha: int = Field(32, ge=1, description="LoRA scale alpha")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA adapters' input")
    history_len: int = Field(20, ge=1, description="items of history in a prompt (the most recent)")
    max_prompt_tokens: int = Field(512, ge=1, description="longer prompts lose their oldest items")
    max_answer_tokens: int = Field(32, ge=1, description="text answers (titles) are cut to this")
    with_titles: bool = Field(
        False, description="item titles in prompts", json_schema_extra={CLI: "--titles/--no-titles"}
    )
    prompt_align: int = Field(
        default=1,
        ge=1,
        description="lines format only: left-pad prompts to a multiple of this (the serving KV block "
        "size: 32 on CPU, 16 on GPU) so that beams share every prompt block; the compact format "
        "is never padded (1)",
    )
    tasks: TaskMixture = Field(
        default_factory=TaskMixture, description="the task mixture (genrec train --task NAME=WEIGHT)"
    )
    checkpoint_every: int = Field(0, ge=0, description="steps between resumable checkpoints; 0: none")
    max_train_s: float | None = Field(None, gt=0, description="stop stage 1 after this much training time")
    val_every: int = Field(0, ge=0, description="steps between validations (Recall, NDCG at val_k); 0: none")
    val_users: int = Field(500, ge=1, description="validation users, sampled once")
    val_k: int = Field(10, ge=1, description="validation ranks this many items (Recall and NDCG at k)")
    val_batch: int = Field(32, ge=1, description="users per constrained search during validation")
    val_beam: int = Field(20, ge=1, description="beam width of the validation search (the protocol's 20)")
    patience: int | None = Field(None, ge=1, description="validations without improvement before stopping")
    val_metric: Literal["recall", "ndcg"] = Field(
        "recall",
        description="the validation metric at val_k that early stopping and keep_best watch (ndcg also "
        "rewards the true item's rank inside the top val_k, which recall ignores)",
    )
    min_delta: float = Field(0.0, ge=0, description="the val_metric gain that counts as an improvement")
    keep_best: bool = Field(True, description="end stage 1 on the best validated weights")
    anneal: bool = Field(
        False, description="EAGER-LLM's annealing stage: a fresh LoRA on next-item after stage 1"
    )
    anneal_steps: int = Field(200, ge=1, description="annealing-stage optimizer steps")
    anneal_lr: float = Field(3e-4, gt=0, description="annealing-stage peak learning rate (cosine decay to 0)")
    anneal_warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="fraction of the annealing stage warming up"
    )
    seed: int = Field(0, description="seeds the data order, sampling and initialisation")
    device: str = Field("auto", description="auto, cpu or cuda (auto: cuda when torch sees a GPU)")

    @model_validator(mode="after")
    def _next_item_trains_somewhere(self) -> TrainConfig:
        if not self.tasks.active():
            raise ValueError("tasks: at least one task must be enabled with a weight > 0")
        if self.patience is not None and self.val_every == 0:
            raise ValueError("patience needs val_every > 0 (early stopping watches validation)")
        if self.val_beam < self.val_k:
            raise ValueError(f"val_beam ({self.val_beam}) must be >= val_k ({self.val_k})")
        if self.prompt_format == COMPACT and self.prompt_align != 1:
            raise ValueError("prompt_align: the compact prompt format is never padded (use 1)")
        if self.objective == "sequence" and self.prompt_format != COMPACT:
            raise ValueError(
                "objective 'sequence' needs prompt_format 'compact' (served prompts are its prefixes)"
            )
        if self.base_model == SCRATCH:
            if self.with_titles:
                raise ValueError("with_titles: the scratch model's vocabulary has no words for titles")
            others = [t for t in self.tasks.active() if t != NEXT_ITEM]
            if others:
                raise ValueError(f"tasks: the scratch model reads semantic IDs only, not {others}")
            self.full_finetune = True  # random weights: every weight trains
        elif self.scratch_sid_init != "random":
            raise ValueError("scratch_sid_init: only the scratch model starts from random ID embeddings")
        return self

    def prompt_settings(self) -> PromptSettings:
        """The prompt format, shared with serving through the bundle manifest."""
        return PromptSettings(
            history_len=self.history_len,
            max_prompt_tokens=self.max_prompt_tokens,
            with_titles=self.with_titles,
            align=self.prompt_align,
            format=self.prompt_format,
        )
