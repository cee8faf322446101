"""Fixtures of the top-K and rank tests: a 12-item toy catalog, its trie, prompt-seeded scorers.

Modules that need another catalog define their own ``catalog`` fixture, which wins over this one.
"""

from __future__ import annotations

import pytest
from model_test_helpers import make_catalog
from topk_helpers import NUM_ITEMS, PromptSeededScorers

from model.catalog import Catalog
from model.trie import CompiledTrie


@pytest.fixture
def catalog() -> Catalog:
    return make_catalog(NUM_ITEMS)


@pytest.fixture
def trie(catalog: Catalog) -> CompiledTrie:
    return CompiledTrie.build([item.sid for item in catalog])


@pytest.fixture
def scorers(trie: CompiledTrie) -> PromptSeededScorers:
    return PromptSeededScorers(trie)
