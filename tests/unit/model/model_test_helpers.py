"""Small, deterministic stand-ins for the model-package tests: catalogs, a dict trie, a table scorer.

Everything here is plain Python (no model, no engine) so the tests can compare the vectorised
code in ``model/`` against an obviously-correct reference.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence

import numpy as np

from model.catalog import Catalog, CatalogItem
from model.search import LiveRows, renormalise
from model.semantic_id import SemanticId, SidScheme
from model.trie import PAD, ROOT, CompiledTrie

SCHEME = SidScheme((3, 4, 2))
# Token ids deliberately unlike the codes (and different per level) so code/token mix-ups show.
TOKEN_BASE = 100
TOKEN_LEVEL_STRIDE = 10


def make_catalog(num_items: int = 12, scheme: SidScheme = SCHEME) -> Catalog:
    """Items ``i0..i{n-1}`` on the first ``n`` semantic IDs of ``scheme`` in lexicographic order."""
    sids = list(itertools.islice(itertools.product(*(range(s) for s in scheme.codebook_sizes)), num_items))
    items = [
        CatalogItem(item_id=f"i{i}", title=f"Item {i}", sid=tuple(sid), popularity=(i * 7) % 5)
        for i, sid in enumerate(sids)
    ]
    return Catalog(scheme, items)


def random_sids(rng: np.random.Generator, scheme: SidScheme, num_items: int) -> list[SemanticId]:
    """``num_items`` distinct random semantic IDs of ``scheme`` (in random order)."""
    space = int(np.prod(scheme.codebook_sizes))
    picks = rng.choice(space, size=min(num_items, space), replace=False)
    return [tuple(int(c) for c in np.unravel_index(int(p), scheme.codebook_sizes)) for p in picks]


def token_of_code(scheme: SidScheme) -> np.ndarray:
    """``[levels, max_codebook]``: token id ``TOKEN_BASE + level * stride + code`` (PAD past a level)."""
    width = max(scheme.codebook_sizes)
    table = np.full((scheme.num_levels, width), PAD, dtype=np.int64)
    for level, size in enumerate(scheme.codebook_sizes):
        table[level, :size] = TOKEN_BASE + level * TOKEN_LEVEL_STRIDE + np.arange(size)
    return table


def vocab_size_for(scheme: SidScheme) -> int:
    return TOKEN_BASE + scheme.num_levels * TOKEN_LEVEL_STRIDE + 5


class DictTrie:
    """Reference trie: nested dicts keyed by code, leaves hold the item's position."""

    def __init__(self, sids: Sequence[SemanticId]) -> None:
        self.root: dict[int, object] = {}
        for index, sid in enumerate(sids):
            node = self.root
            for code in sid[:-1]:
                node = node.setdefault(code, {})  # type: ignore[assignment]
            node[sid[-1]] = index

    def lookup(self, prefix: Sequence[int]) -> dict[int, object] | int | None:
        node: object = self.root
        for code in prefix:
            if not isinstance(node, dict) or code not in node:
                return None
            node = node[code]
        return node  # type: ignore[return-value]

    def children(self, prefix: Sequence[int]) -> list[int]:
        node = self.lookup(prefix)
        return sorted(node) if isinstance(node, dict) else []

    def prefixes(self) -> list[tuple[int, ...]]:
        """Every valid prefix (the root's ``()`` included), depth-first."""
        out: list[tuple[int, ...]] = []

        def visit(node: object, prefix: tuple[int, ...]) -> None:
            out.append(prefix)
            if isinstance(node, dict):
                for code in sorted(node):
                    visit(node[code], (*prefix, code))

        visit(self.root, ())
        return out


def node_path(trie: CompiledTrie, sid: Sequence[int]) -> list[tuple[int, int]]:
    """``(node, slot)`` of every step of ``sid`` from the root."""
    path = []
    node = ROOT
    for code in sid:
        slot = int(np.nonzero(trie.children[node] == code)[0][0])
        path.append((node, slot))
        node = int(trie.child_node[node, slot])
    return path


class TableScorer:
    """A ``ChildScorer`` from a fixed table: ``logp[prompt, node, slot]``, renormalised over children.

    Each call checks that every row's prefix tokens spell the path to the row's node, so a
    search that mixes up its beam bookkeeping fails here rather than silently.
    """

    def __init__(self, trie: CompiledTrie, children_tokens: np.ndarray, num_prompts: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        raw = rng.normal(scale=2.0, size=(num_prompts, trie.num_nodes, trie.max_children))
        valid = trie.child_node != PAD
        self.table = np.stack([renormalise(raw[p], valid) for p in range(num_prompts)])
        assert not np.isnan(self.table).any()
        self.trie = trie
        self.children_tokens = children_tokens
        self.calls: list[LiveRows] = []

    def __call__(self, rows: LiveRows) -> np.ndarray:
        self.calls.append(rows)
        assert rows.prompt_index.shape == rows.node.shape
        assert rows.prefix_tokens.shape[0] == rows.node.shape[0]
        for prefix, node in zip(rows.prefix_tokens, rows.node, strict=True):
            reached = ROOT
            for token in prefix:
                (slot,) = np.nonzero(self.children_tokens[reached] == token)[0]
                reached = int(self.trie.child_node[reached, slot])
            assert reached == node, f"prefix {prefix.tolist()} spells node {reached}, row says {node}"
            assert self.trie.depth[node] == len(prefix)
        return self.table[rows.prompt_index, rows.node]

    def item_score(self, prompt: int, sid: Sequence[int]) -> float:
        return float(sum(self.table[prompt, node, slot] for node, slot in node_path(self.trie, sid)))


def exhaustive_ranking(
    scorer: TableScorer, prompt: int, sids: Sequence[SemanticId]
) -> list[tuple[int, float]]:
    """Every item ``(index, score)`` for ``prompt``, best first (ties by index)."""
    scored = [(index, scorer.item_score(prompt, sid)) for index, sid in enumerate(sids)]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0]))


class WordTokenizer:
    """A callable stand-in for a HF tokenizer: one stable id per whitespace-separated word."""

    bos_id = 1

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        self.calls.append((text, add_special_tokens))
        ids = [2 + zlib.crc32(word.encode()) % 5000 for word in text.split()]
        return {"input_ids": ([self.bos_id] if add_special_tokens else []) + ids}
