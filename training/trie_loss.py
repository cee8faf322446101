"""The trie-constrained softmax for ID labels: each ID token is scored against the valid
children of the trie node its item's earlier ID tokens spell, exactly as the constrained search
scores it (``model.search``: log-probabilities renormalised over the valid children).

With it the loss of an item's ID is minus its served score, ``-log P(item)`` under the
distribution the search ranks by: a softmax over the catalog's items, factorised along the
trie. The plain ID-token softmax instead spends the model on pushing down tokens the trie never
allows (most codes after a given prefix are not an item), and trains codes that have no
sibling (a single-child node scores 0 at serving) as if they were choices.

Everything here is in *column space*: column ``c`` is the ``c``-th ID token of the level-major
list (``ids``), the columns of the restricted logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.trie import PAD, ROOT, CompiledTrie
from model.trie_mask import TrieMask, token_of_code_table


@dataclass(frozen=True)
class TrieTargets:
    """The ID tokens, their levels and the trie, in column space on the training device."""

    ids: torch.Tensor  # [S] vocabulary ids of the ID tokens, level-major
    level: torch.Tensor  # [S] level of each column
    mask: TrieMask  # the trie with children as columns

    @classmethod
    def build(
        cls, token_ids: Sequence[Sequence[int]], trie: CompiledTrie, device: torch.device
    ) -> TrieTargets:
        """From ``token_ids[level][code]`` (the tokenizer's ids of every code) and the catalog's trie."""
        if len(token_ids) != trie.num_levels:
            raise ValueError(f"{len(token_ids)} ID levels in the tokenizer, {trie.num_levels} in the trie")
        offsets = np.cumsum([0, *(len(level) for level in token_ids)])
        columns = [list(range(offsets[d], offsets[d + 1])) for d in range(len(token_ids))]
        flat = [int(i) for level in token_ids for i in level]
        level = [d for d, level_ids in enumerate(token_ids) for _ in level_ids]
        return cls(
            ids=torch.tensor(flat, dtype=torch.long, device=device),
            level=torch.tensor(level, dtype=torch.long, device=device),
            mask=TrieMask(trie, token_of_code_table(columns), len(flat), device),
        )

    def columns(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Column of each token id (-1 for tokens that are not ID tokens)."""
        size = max(int(token_ids.max()), int(self.ids.max())) + 1
        lookup = torch.full((size,), -1, dtype=torch.long, device=token_ids.device)
        lookup[self.ids] = torch.arange(len(self.ids), device=token_ids.device)
        return lookup[token_ids]

    def nodes_after(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` trie node spelled by the ID tokens up to and including each position.

        A level-``d`` ID token continues the path of the token just before it (an item's ID
        tokens are contiguous); a level-0 token starts at the root. Anything off a valid path
        (a text token, codes out of order) is ``PAD``.
        """
        cols = self.columns(input_ids)
        levels = torch.where(cols >= 0, self.level[cols.clamp(min=0)], -1)
        nodes = torch.full_like(input_ids, PAD)
        for depth in range(self.mask.trie.num_levels):
            at = levels == depth
            if depth == 0:
                parents = torch.full_like(input_ids, ROOT)
            else:
                parents = torch.nn.functional.pad(nodes[:, :-1], (1, 0), value=PAD)
            at &= parents != PAD
            if bool(at.any()):
                nodes[at] = self.mask.advance(parents[at], cols[at])
        return nodes

    def prefix_nodes(self, inputs: torch.Tensor, target_cols: torch.Tensor) -> torch.Tensor:
        """Trie node each ID target is a child of (``PAD`` where it is not a valid child).

        ``inputs[i]`` is the trie node after the token before target ``i`` (``nodes_after``
        at the predicting position); a level-0 target's node is the root whatever came before.
        """
        parents = torch.where(self.level[target_cols] == 0, torch.full_like(inputs, ROOT), inputs)
        valid = parents != PAD
        reached = torch.full_like(parents, PAD)
        if bool(valid.any()):
            reached[valid] = self.mask.advance(parents[valid], target_cols[valid])
        return torch.where(reached != PAD, parents, PAD)

    def mask_logits_(self, logits: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Mask ``[N, S]`` column logits in place to each row's valid children (rows with a
        ``PAD`` node keep the plain ID-token softmax)."""
        rows = torch.nonzero(nodes != PAD).squeeze(1)
        return self.mask.apply_(logits, rows, nodes[rows])
