"""The textbook baseline: transformers ``generate(num_beams=K)`` with a trie ``prefix_allowed_tokens_fn``.

genrec's engine does not use it, so it lives here, not in ``model/``: it is the independent
check the engine is tested against (HF's own beam search, not our search core;
``tests/unit/model/test_model_hf_engine.py``, ``tests/integration/test_pipeline.py``) and the
speed baseline of ``benchmarks/decode_speed.py``. The trie is walked in plain Python here on purpose: that is
what the callback interface asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel

from model.bundle import ArtifactBundle
from model.trie import PAD, ROOT, CompiledTrie
from model.trie_mask import sid_token_table


class TokenTrie:
    """The trie as per-node ``{token: child node}`` dicts, for callbacks that walk it token by token."""

    def __init__(self, trie: CompiledTrie, children_tokens: np.ndarray) -> None:
        self.trie = trie
        self.child = [
            {int(t): int(trie.child_node[node, slot]) for slot, t in enumerate(row) if t != PAD}
            for node, row in enumerate(children_tokens)
        ]
        self.sid_tokens = {token for children in self.child for token in children}

    @classmethod
    def of_bundle(cls, bundle: ArtifactBundle) -> TokenTrie:
        table = sid_token_table(bundle.model_dir, bundle.catalog.scheme)
        return cls(bundle.trie, bundle.trie.to_token_space(table))

    def walk(self, tokens: list[int]) -> int:
        """The node ``tokens`` spell from the root, PAD once they leave the trie."""
        node = ROOT
        for token in tokens:
            node = self.child[node].get(int(token), PAD)
            if node == PAD:
                break
        return node

    def is_leaf(self, node: int) -> bool:
        return node != PAD and int(self.trie.depth[node]) == self.trie.num_levels

    def item_index(self, tokens: list[int]) -> int:
        """The catalog index of the item ``tokens`` spell, PAD if they spell none."""
        node = self.walk(tokens)
        return int(self.trie.leaf_item[node]) if self.is_leaf(node) else PAD


@dataclass(frozen=True)
class GeneratedItem:
    item_index: int  # catalog index, PAD when the returned sequence is not a catalog item
    score: float  # HF's sequence score: the sum of the beam's (renormalised) log-probabilities


def allowed_tokens_fn(
    token_trie: TokenTrie, prompt_len: int, eos: int
) -> Callable[[int, torch.Tensor], list[int]]:
    """A ``prefix_allowed_tokens_fn``: the trie children of the beam's generated tokens, EOS after a leaf."""

    def allowed(_batch: int, ids: torch.Tensor) -> list[int]:
        node = token_trie.walk(ids[prompt_len:].tolist())
        if node == PAD or token_trie.is_leaf(node):
            return [eos]
        return list(token_trie.child[node])

    return allowed


@torch.inference_mode()
def hf_generate_topk(
    model: PreTrainedModel, token_trie: TokenTrie, prompt: list[int], beam_width: int
) -> list[GeneratedItem]:
    """The ``beam_width`` sequences of HF's constrained beam search for one prompt, best first.

    ``renormalize_logits`` makes each step's scores log-probabilities over the allowed tokens
    (what genrec's engine returns), and a length penalty of 0 makes the sequence score their
    plain sum; every ID has the same length, so neither changes which items HF explores.
    """
    eos_ids = model.config.eos_token_id
    eos = int(eos_ids[0] if isinstance(eos_ids, list) else eos_ids)
    device = next(model.parameters()).device
    out = model.generate(  # type: ignore[operator]
        torch.tensor([prompt], device=device),
        attention_mask=torch.ones((1, len(prompt)), dtype=torch.long, device=device),
        num_beams=beam_width,
        num_return_sequences=beam_width,
        max_new_tokens=token_trie.trie.num_levels,
        do_sample=False,
        prefix_allowed_tokens_fn=allowed_tokens_fn(token_trie, len(prompt), eos),
        renormalize_logits=True,
        length_penalty=0.0,
        pad_token_id=eos,
        output_scores=True,
        return_dict_in_generate=True,
    )
    return [
        GeneratedItem(token_trie.item_index(sequence[len(prompt) :].tolist()), float(score))
        for sequence, score in zip(out.sequences, out.sequences_scores, strict=True)
    ]
