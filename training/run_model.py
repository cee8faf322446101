"""The model a fine-tuning run starts from: its base weights, with the semantic-ID tokens added
and their embeddings initialised.

The base is a tiny Llama whose tokenizer is trained on the run's own prompts (``tiny``), a
small Llama with random weights over the ID vocabulary (``scratch``), or a pretrained
checkpoint. The ID tokens of a pretrained model start aligned with its embedding space when the
tokenizer saved codebooks (Semantic Convergence); the scratch model's start random or along
the codebook centroids (``scratch_sid_init``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from model.catalog import Catalog
from training.base_model import (
    TINY,
    add_sid_tokens,
    build_scratch_model,
    build_tiny_model,
    resolve_base_model,
    sid_token_ids,
)
from training.data import Example
from training.encoding import prompt_text, tiny_corpus
from training.sid_alignment import (
    CODEBOOKS_FILE,
    SidCodebooks,
    init_aligned_sid_embeddings,
    init_codebook_sid_embeddings,
)
from training.task_context import Sample
from training.train_config import SCRATCH, TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class StartingModel:
    """The base model with the ID tokens, its tokenizer, the ID tokens' ids and how the init went."""

    model: PreTrainedModel
    tokenizer: Any
    sid_ids: list[int]
    tied: bool  # input and output embeddings share one matrix
    aligned_r2: float | None  # fit of the aligned ID-token init (None: not aligned)


def codebooks_file(tokenizer_dir: Path) -> Path:
    """The tokenizer's codebooks, which ``scratch_sid_init='codebook'`` needs."""
    path = tokenizer_dir / CODEBOOKS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"scratch_sid_init='codebook' needs {path}: tokenize with \"align\": true, or use 'random'"
        )
    return path


def base_model_path(
    config: TrainConfig,
    build_dir: Path,
    examples: list[Example],
    mixture: dict[str, list[Sample]],
    catalog: Catalog,
) -> Path:
    """The base checkpoint: built into ``build_dir`` for ``tiny`` and ``scratch``, else resolved."""
    if config.base_model == TINY:
        corpus = tiny_corpus(examples, catalog, config)
        for samples in mixture.values():
            corpus.extend(prompt_text(s, catalog, config) for s in samples[:200])
            corpus.extend(s.answer_text for s in samples[:200] if s.answer_text is not None)
        return build_tiny_model(build_dir, corpus, seed=config.seed)
    if config.base_model == SCRATCH:
        shape = config.scratch
        return build_scratch_model(
            build_dir,
            hidden=shape.hidden,
            layers=shape.layers,
            heads=shape.heads,
            intermediate=shape.intermediate,
            seed=config.seed,
        )
    return resolve_base_model(config.base_model)


def starting_model(
    base_path: Path, config: TrainConfig, catalog: Catalog, tokenizer_dir: Path
) -> StartingModel:
    """Load ``base_path`` in fp32, add the catalog's ID tokens and initialise their embeddings."""
    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    scratch = config.base_model == SCRATCH
    sid_ids = add_sid_tokens(model, tokenizer, catalog.scheme, random_init=scratch)
    tied = bool(model.config.tie_word_embeddings)
    aligned_r2 = None  # scratch: random weights, there is no LLM embedding space to align with
    if scratch and config.scratch_sid_init == "codebook":
        init_codebook_sid_embeddings(
            model,
            SidCodebooks.load(codebooks_file(tokenizer_dir)),
            sid_token_ids(tokenizer, catalog.scheme),
            seed=config.seed,
        )
    elif not scratch and (tokenizer_dir / CODEBOOKS_FILE).is_file():
        aligned_r2 = init_aligned_sid_embeddings(
            model,
            tokenizer,
            SidCodebooks.load(tokenizer_dir / CODEBOOKS_FILE),
            [item.sid for item in catalog],
            [item.title for item in catalog],
            sid_token_ids(tokenizer, catalog.scheme),
        )
    elif not scratch:
        logger.info(
            "no %s in %s: semantic-ID tokens start at the mean embedding", CODEBOOKS_FILE, tokenizer_dir
        )
    return StartingModel(model, tokenizer, sid_ids, tied, aligned_r2)
