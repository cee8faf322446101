"""Validation during training: Recall@k of the model being trained on a fixed sample of
validation users, through the constrained HF engine (the targets are used for this metric only)."""

from __future__ import annotations

import random

import torch
from transformers import PreTrainedTokenizerBase

from model.catalog import Catalog
from model.hf_engine import HFChildScorer
from model.search import ChildScorer
from model.topk import ConstrainedRecommender, PromptBuilder
from model.trie import CompiledTrie
from model.trie_mask import token_of_code_table
from training.base_model import sid_token_ids
from training.data import Example, InteractionData, leave_one_out
from training.devices import autocast_for
from training.metrics import summarize
from training.train_config import TrainConfig


class Validator:
    """Recall@k (and NDCG@k) on a fixed sample of validation users through the constrained
    HF engine, scored by the model being trained (eval mode, the training precision)."""

    def __init__(
        self,
        examples: list[Example],
        catalog: Catalog,
        trie: CompiledTrie,
        tokenizer: PreTrainedTokenizerBase,
        config: TrainConfig,
        device: torch.device,
    ) -> None:
        self.examples = examples
        self.catalog = catalog
        self.trie = trie
        self.children = trie.to_token_space(token_of_code_table(sid_token_ids(tokenizer, catalog.scheme)))
        self.prompts = PromptBuilder(catalog, tokenizer, config.prompt_settings())
        self.pad_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.k = config.val_k
        self.beam = config.val_beam
        self.precision = config.precision
        self.batch = config.val_batch
        self.rows = 256 if device.type == "cuda" else 64
        self.device = device

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()

        def make_scorer(prompts: list[list[int]]) -> ChildScorer:
            return HFChildScorer(model, prompts, self.children, pad_id=self.pad_id, batch_size=self.rows)

        recommender = ConstrainedRecommender(
            catalog=self.catalog,
            trie=self.trie,
            children_tokens=self.children,
            prompts=self.prompts,
            make_scorer=make_scorer,
            beam_width=self.beam,
            max_batch=self.batch,
            model_version="training",
        )
        try:
            with autocast_for(self.device, self.precision):
                rows = recommender.recommend([list(e.history) for e in self.examples], self.k)
        finally:
            model.train(was_training)
        rankings = [[item.item_id for item in row] for row in rows]
        return summarize(rankings, [e.target for e in self.examples], ks=(self.k,))


def validation_sample(data: InteractionData, config: TrainConfig) -> list[Example]:
    """A fixed (seeded) sample of validation users: history ``s[:-2]``, target ``s[-2]``."""
    valid = leave_one_out(data, max_history=config.history_len).valid
    if len(valid) > config.val_users:
        valid = random.Random(f"{config.seed}:validation").sample(valid, config.val_users)
    return valid
