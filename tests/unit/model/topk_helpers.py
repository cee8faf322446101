"""The prompt-seeded table scorers and the toy recommender shared by the top-K and rank tests."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from model_test_helpers import WordTokenizer, node_path, token_of_code

from model.catalog import Catalog
from model.search import ChildScorer, LiveRows, renormalise
from model.topk import ConstrainedRecommender, PromptBuilder, PromptSettings
from model.trie import PAD, CompiledTrie

NUM_ITEMS = 12


class PromptSeededScorers:
    """A ``ScorerFactory``: each prompt gets its own log-prob table, seeded by its token ids."""

    def __init__(self, trie: CompiledTrie) -> None:
        self.trie = trie
        self.batches: list[list[list[int]]] = []

    def table(self, prompt: Sequence[int]) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(np.asarray(prompt, np.int64).tobytes()))
        raw = rng.normal(scale=2.0, size=self.trie.children.shape)
        table = renormalise(raw, self.trie.child_node != PAD)
        return table

    def __call__(self, prompts: list[list[int]]) -> ChildScorer:
        self.batches.append(prompts)
        tables = np.stack([self.table(p) for p in prompts])

        def scorer(rows: LiveRows) -> np.ndarray:
            return tables[rows.prompt_index, rows.node]

        return scorer

    def ranking(self, prompt: Sequence[int], catalog: Catalog) -> list[tuple[str, float]]:
        table = self.table(prompt)
        scored = [
            (item.item_id, float(sum(table[n, s] for n, s in node_path(self.trie, item.sid))))
            for item in catalog
        ]
        return sorted(scored, key=lambda pair: -pair[1])


def make_recommender(
    catalog: Catalog,
    trie: CompiledTrie,
    scorers: PromptSeededScorers,
    *,
    beam_width: int = NUM_ITEMS,
    max_batch: int = 16,
    settings: PromptSettings | None = None,
) -> ConstrainedRecommender:
    return ConstrainedRecommender(
        catalog=catalog,
        trie=trie,
        children_tokens=trie.to_token_space(token_of_code(catalog.scheme)),
        prompts=PromptBuilder(catalog, WordTokenizer(), settings or PromptSettings()),
        make_scorer=scorers,
        beam_width=beam_width,
        max_batch=max_batch,
        model_version="toy-v3",
    )


HISTORIES = [["i1", "i2"], ["i5"], [], ["i11", "i0", "i7"], ["i3", "i3"]]
