"""ConstrainedRecommender and PromptBuilder with a fake tokenizer and a prompt-seeded table scorer."""

from __future__ import annotations

import numpy as np
import pytest
from model_test_helpers import WordTokenizer, make_catalog
from topk_helpers import HISTORIES, PromptSeededScorers, make_recommender

from model.catalog import Catalog
from model.prompts import encode_prompt, next_item_prompt
from model.recommender import Recommender, ScoredItem
from model.topk import PromptBuilder, PromptSettings
from model.trie import CompiledTrie


def test_is_a_recommender(catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers) -> None:
    recommender: Recommender = make_recommender(catalog, trie, scorers)
    assert recommender.model_version == "toy-v3"
    assert recommender.catalog is catalog


def test_returns_the_exact_top_k_distinct_items(
    catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers
) -> None:
    recommender = make_recommender(catalog, trie, scorers)
    results = recommender.recommend(HISTORIES, k=5)
    assert len(results) == len(HISTORIES)
    for history, row in zip(HISTORIES, results, strict=True):
        assert len(row) == 5
        assert all(isinstance(item, ScoredItem) for item in row)
        ids = [item.item_id for item in row]
        assert len(set(ids)) == 5
        assert all(i in catalog for i in ids)
        scores = [item.score for item in row]
        assert scores == sorted(scores, reverse=True)
        truth = scorers.ranking(recommender.prompts.encode(history), catalog)[:5]
        assert ids == [item_id for item_id, _ in truth]
        np.testing.assert_allclose(scores, [s for _, s in truth], atol=1e-9)
    # Different histories give different prompts and so different rankings.
    assert len({tuple(i.item_id for i in row) for row in results}) > 1


def test_a_narrow_beam_still_returns_k_distinct_items(
    catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers
) -> None:
    recommender = make_recommender(catalog, trie, scorers, beam_width=3)
    for row in recommender.recommend(HISTORIES, k=3):
        assert len({item.item_id for item in row}) == 3
        assert [i.score for i in row] == sorted((i.score for i in row), reverse=True)


def test_unknown_history_ids_are_dropped(
    catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers
) -> None:
    recommender = make_recommender(catalog, trie, scorers)
    with_unknown = recommender.recommend([["nope", "i1", "??", "i2", "i99"]], k=4)
    without = recommender.recommend([["i1", "i2"]], k=4)
    assert with_unknown == without
    assert scorers.batches[0] == scorers.batches[1]
    only_unknown = recommender.recommend([["x", "y"]], k=4)
    assert only_unknown == recommender.recommend([[]], k=4)


def test_k_is_validated_against_the_beam_width(
    catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers
) -> None:
    recommender = make_recommender(catalog, trie, scorers, beam_width=4)
    with pytest.raises(ValueError, match="k=5 exceeds the engine's beam width 4"):
        recommender.recommend([["i1"]], k=5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        recommender.recommend([["i1"]], k=0)
    assert scorers.batches == []
    assert len(recommender.recommend([["i1"]], k=4)[0]) == 4


def test_k_above_the_catalog_size_returns_the_whole_catalog() -> None:
    small = make_catalog(4)
    small_trie = CompiledTrie.build([item.sid for item in small])
    recommender = make_recommender(small, small_trie, PromptSeededScorers(small_trie), beam_width=10)
    (row,) = recommender.recommend([["i0"]], k=10)
    assert sorted(item.item_id for item in row) == ["i0", "i1", "i2", "i3"]


def test_histories_are_scored_in_batches_of_max_batch(
    catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers
) -> None:
    batched = make_recommender(catalog, trie, scorers, max_batch=2)
    results = batched.recommend(HISTORIES, k=3)
    assert [len(batch) for batch in scorers.batches] == [2, 2, 1]
    whole = make_recommender(catalog, trie, PromptSeededScorers(trie), max_batch=16)
    assert results == whole.recommend(HISTORIES, k=3)


def test_no_histories_means_no_scoring(
    catalog: Catalog, trie: CompiledTrie, scorers: PromptSeededScorers
) -> None:
    assert make_recommender(catalog, trie, scorers).recommend([], k=3) == []
    assert scorers.batches == []


def test_prompt_builder_encodes_the_shared_template(catalog: Catalog) -> None:
    tokenizer = WordTokenizer()
    builder = PromptBuilder(catalog, tokenizer, PromptSettings(with_titles=False))
    ids = builder.encode(["i4", "unknown", "i2"])
    text = next_item_prompt([catalog["i4"], catalog["i2"]], catalog.scheme, with_titles=False)
    assert ids == encode_prompt(WordTokenizer(), text)
    assert tokenizer.calls[-1] == (text, True)
    assert builder.known_items(["i4", "unknown", "i2", "i4"]) == ["i4", "i2", "i4"]


def test_prompt_builder_keeps_the_last_history_len_known_items(catalog: Catalog) -> None:
    builder = PromptBuilder(catalog, WordTokenizer(), PromptSettings(history_len=2))
    ids = builder.encode(["i1", "i2", "zzz", "i3", "nope"])
    expected = next_item_prompt([catalog["i2"], catalog["i3"]], catalog.scheme)
    assert ids == encode_prompt(WordTokenizer(), expected)


def test_prompt_builder_drops_the_oldest_items_until_the_prompt_fits(catalog: Catalog) -> None:
    history = ["i1", "i2", "i3", "i4", "i5"]
    full = [catalog[i] for i in history]
    length = {
        n: len(encode_prompt(WordTokenizer(), next_item_prompt(full[-n:] if n else [], catalog.scheme)))
        for n in range(6)
    }
    assert length[0] < length[1] < length[5]
    builder = PromptBuilder(catalog, WordTokenizer(), PromptSettings(max_prompt_tokens=length[2]))
    ids = builder.encode(history)
    assert len(ids) == length[2]
    assert ids == encode_prompt(WordTokenizer(), next_item_prompt(full[-2:], catalog.scheme))
    # One token short of two items: only the newest item is kept.
    builder = PromptBuilder(catalog, WordTokenizer(), PromptSettings(max_prompt_tokens=length[2] - 1))
    assert builder.encode(history) == encode_prompt(
        WordTokenizer(), next_item_prompt(full[-1:], catalog.scheme)
    )


def test_prompt_builder_returns_the_bare_prompt_when_nothing_fits(catalog: Catalog) -> None:
    builder = PromptBuilder(catalog, WordTokenizer(), PromptSettings(max_prompt_tokens=3))
    ids = builder.encode(["i1", "i2"])
    assert ids == encode_prompt(WordTokenizer(), next_item_prompt([], catalog.scheme))
    assert len(ids) > 3
