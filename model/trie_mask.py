"""Engine-independent trie mask: which tokens each row of a batch may emit next.

``TrieMask`` holds the trie's children in token space on the engine's device. Given one trie
node per row it masks a batch of logits with one gather, one fill and one scatter, so the
cost does not grow with Python-level work per row or per vocabulary entry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.semantic_id import SidScheme, sid_token
from model.trie import PAD, CompiledTrie


class TrieMask:
    def __init__(
        self, trie: CompiledTrie, token_of_code: np.ndarray, vocab_size: int, device: torch.device
    ) -> None:
        children = trie.to_token_space(token_of_code)
        if children.size and int(children.max()) >= vocab_size:
            raise ValueError(f"trie token id {int(children.max())} outside vocabulary of size {vocab_size}")
        valid = children != PAD
        # For masking, PAD slots repeat the node's first child: gathering and scattering back a
        # duplicate writes the same value twice, so no scratch column or [rows, vocab] mask is needed.
        first = np.where(valid[:, :1], children[:, :1], 0)
        self.mask_index = torch.as_tensor(np.where(valid, children, first), device=device)
        self.has_children = torch.as_tensor(valid.any(axis=1), device=device)
        self.children = torch.as_tensor(children, device=device)
        self.child_node = torch.as_tensor(trie.child_node, device=device)
        self.trie = trie
        self.vocab_size = vocab_size
        self.device = device

    def additive_mask(self, nodes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[len(nodes), vocab]`` tensor: 0 where a child of the row's node, -inf elsewhere."""
        zeros = torch.zeros((nodes.shape[0], self.vocab_size), dtype=dtype, device=self.device)
        return self.apply_(zeros, torch.arange(nodes.shape[0], device=self.device), nodes)

    def apply_(self, logits: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Mask ``logits[rows]`` in place to the children of ``nodes``; other rows are untouched.

        Gather the children's logits, fill the rows with -inf, scatter the children back: one
        pass over the masked rows and no temporary of the logits' size.
        """
        if not rows.numel():
            return logits
        index = self.mask_index[nodes]
        kept = logits[rows[:, None], index]
        kept = torch.where(self.has_children[nodes][:, None], kept, float("-inf"))
        logits.index_fill_(0, rows, float("-inf"))
        logits[rows[:, None], index] = kept
        return logits

    def advance(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Node reached from each of ``nodes`` by emitting ``tokens`` (PAD where not a child)."""
        hits = self.children[nodes] == tokens[:, None]
        found = hits.any(dim=1)
        slot = hits.to(torch.int64).argmax(dim=1)
        nxt = self.child_node[nodes, slot]
        return torch.where(found, nxt, torch.full_like(nxt, PAD))


def token_of_code_table(sid_token_ids: list[list[int]]) -> np.ndarray:
    """``[levels, max_codebook]`` table of vocabulary ids, from per-level lists of token ids."""
    width = max(len(level) for level in sid_token_ids)
    table = np.full((len(sid_token_ids), width), PAD, dtype=np.int64)
    for level, ids in enumerate(sid_token_ids):
        table[level, : len(ids)] = ids
    return table


def sid_token_table(model_dir: Path, scheme: SidScheme) -> np.ndarray:
    """Token ids of every (level, code) as the served tokenizer numbers them."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(model_dir)).get_vocab()
    per_level = [
        vocab_ids(vocab, [sid_token(level, code) for code in range(size)], model_dir)
        for level, size in enumerate(scheme.codebook_sizes)
    ]
    return token_of_code_table(per_level)


def vocab_ids(vocab: dict[str, int], tokens: list[str], where: object) -> list[int]:
    """Ids of ``tokens``; a missing one is an error (``convert_tokens_to_ids`` would give <unk>)."""
    missing = [token for token in tokens if token not in vocab]
    if missing:
        raise ValueError(f"{where}: tokenizer lacks {len(missing)} semantic-ID tokens, e.g. {missing[0]}")
    return [vocab[token] for token in tokens]
