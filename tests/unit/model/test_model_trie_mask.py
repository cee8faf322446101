"""Vectorised trie mask: allowed tokens and advance() against a plain dict trie, token tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_test_helpers import DictTrie, random_sids, token_of_code, vocab_size_for

from model.semantic_id import SemanticId, SidScheme, sid_token
from model.trie import PAD, ROOT, CompiledTrie
from model.trie_mask import TrieMask, sid_token_table, token_of_code_table, vocab_ids

CPU = torch.device("cpu")


def build(scheme: SidScheme, sids: list[SemanticId]) -> tuple[CompiledTrie, TrieMask, DictTrie, np.ndarray]:
    trie = CompiledTrie.build(sids)
    table = token_of_code(scheme)
    return trie, TrieMask(trie, table, vocab_size_for(scheme), CPU), DictTrie(sids), table


def expected_tokens(reference: DictTrie, table: np.ndarray, prefix: tuple[int, ...]) -> set[int]:
    return {int(table[len(prefix), code]) for code in reference.children(prefix)}


@st.composite
def random_trie(draw: st.DrawFn) -> tuple[SidScheme, list[SemanticId]]:
    sizes = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))
    scheme = SidScheme(sizes)
    count = draw(st.integers(1, min(int(np.prod(sizes)), 60)))
    seed = draw(st.integers(0, 2**32 - 1))
    return scheme, random_sids(np.random.default_rng(seed), scheme, count)


@settings(max_examples=60, deadline=None)
@given(random_trie())
def test_mask_allows_exactly_the_dict_trie_children(case: tuple[SidScheme, list[SemanticId]]) -> None:
    scheme, sids = case
    trie, mask, reference, table = build(scheme, sids)
    prefixes = reference.prefixes()
    nodes = torch.tensor([trie.walk(p) for p in prefixes])
    additive = mask.additive_mask(nodes)
    assert additive.shape == (len(prefixes), mask.vocab_size)
    assert additive.dtype == torch.float32
    for row, prefix in enumerate(prefixes):
        allowed = set(torch.nonzero(additive[row] == 0).flatten().tolist())
        assert allowed == expected_tokens(reference, table, prefix)
        # Everything else is -inf (not some large negative number).
        others = torch.ones(mask.vocab_size, dtype=torch.bool)
        others[list(allowed)] = False
        assert torch.isneginf(additive[row][others]).all()


@settings(max_examples=60, deadline=None)
@given(random_trie(), st.integers(0, 2**32 - 1))
def test_advance_follows_the_path_of_every_item(case: tuple[SidScheme, list[SemanticId]], seed: int) -> None:
    scheme, sids = case
    trie, mask, _, table = build(scheme, sids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sids))
    nodes = torch.full((len(sids),), ROOT, dtype=torch.int64)
    for level in range(scheme.num_levels):
        tokens = torch.tensor([int(table[level, sids[i][level]]) for i in order])
        # Every token taken is allowed by the mask at the current node.
        additive = mask.additive_mask(nodes)
        assert (additive[torch.arange(len(sids)), tokens] == 0).all()
        nodes = mask.advance(nodes, tokens)
        assert nodes.tolist() == [trie.walk(sids[i][: level + 1]) for i in order]
    assert trie.leaf_item[nodes.numpy()].tolist() == order.tolist()
    # At a leaf nothing is allowed.
    assert torch.isneginf(mask.additive_mask(nodes)).all()


def test_advance_with_a_token_that_is_not_a_child_gives_pad() -> None:
    scheme = SidScheme((3, 3))
    sids = [(0, 1), (0, 2), (2, 0)]
    trie, mask, _, table = build(scheme, sids)
    node_0 = trie.walk([0])
    node_2 = trie.walk([2])
    nodes = torch.tensor([ROOT, ROOT, node_0, node_0, node_2, ROOT])
    tokens = torch.tensor(
        [
            int(table[0, 1]),  # code 1 is not a root child
            int(table[1, 0]),  # a level-1 token at the root
            int(table[1, 0]),  # (0, 0) is not an item
            int(table[1, 2]),  # valid
            5,  # an ordinary vocabulary token
            mask.vocab_size,  # the scratch column must not count as a child
        ]
    )
    assert mask.advance(nodes, tokens).tolist() == [PAD, PAD, PAD, trie.walk([0, 2]), PAD, PAD]


def test_apply_masks_only_the_given_rows_in_place() -> None:
    scheme = SidScheme((3, 2))
    sids = [(0, 0), (0, 1), (2, 1)]
    trie, mask, _, table = build(scheme, sids)
    logits = torch.randn(4, mask.vocab_size)
    original = logits.clone()
    rows = torch.tensor([1, 3])
    nodes = torch.tensor([ROOT, trie.walk([2])])
    out = mask.apply_(logits, rows, nodes)
    assert out is logits
    torch.testing.assert_close(logits[[0, 2]], original[[0, 2]])
    root_tokens = [int(table[0, 0]), int(table[0, 2])]
    assert torch.isfinite(logits[1]).nonzero().flatten().tolist() == root_tokens
    torch.testing.assert_close(logits[1, root_tokens], original[1, root_tokens])
    assert torch.isfinite(logits[3]).nonzero().flatten().tolist() == [int(table[1, 1])]
    # No rows: nothing changes.
    before = logits.clone()
    mask.apply_(logits, torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64))
    torch.testing.assert_close(logits, before, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_mask_follows_the_logits_dtype(dtype: torch.dtype) -> None:
    scheme = SidScheme((2, 2))
    trie, mask, _, _ = build(scheme, [(0, 0), (1, 1)])
    logits = torch.zeros(2, mask.vocab_size, dtype=dtype)
    mask.apply_(logits, torch.tensor([0, 1]), torch.tensor([ROOT, trie.walk([1])]))
    assert logits.dtype == dtype
    assert int(torch.isfinite(logits).sum()) == 3


def test_trie_tokens_outside_the_vocabulary_are_rejected() -> None:
    scheme = SidScheme((2, 2))
    trie = CompiledTrie.build([(0, 0), (1, 1)])
    table = token_of_code(scheme)
    with pytest.raises(ValueError, match="outside vocabulary"):
        TrieMask(trie, table, int(table.max()), CPU)
    TrieMask(trie, table, int(table.max()) + 1, CPU)  # the largest id fits exactly


def test_token_of_code_table_pads_short_levels() -> None:
    table = token_of_code_table([[10, 11, 12], [20], [30, 31]])
    assert table.dtype == np.int64
    assert table.tolist() == [[10, 11, 12], [20, PAD, PAD], [30, 31, PAD]]


def test_vocab_ids_in_order_and_missing_tokens_are_errors() -> None:
    vocab = {"<a_0>": 7, "<a_1>": 3, "x": 0}
    assert vocab_ids(vocab, ["<a_1>", "<a_0>"], "here") == [3, 7]
    with pytest.raises(ValueError, match=r"here: tokenizer lacks 2 semantic-ID tokens, e.g. <b_0>"):
        vocab_ids(vocab, ["<a_0>", "<b_0>", "<b_1>"], "here")


def save_word_tokenizer(path: Path, extra_tokens: list[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "hello", "world"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    tokenizer.add_tokens(extra_tokens)
    tokenizer.save_pretrained(path)


def test_sid_token_table_reads_the_saved_tokenizer(tmp_path: Path) -> None:
    scheme = SidScheme((3, 2))
    # Added in a scrambled order, so ids are not simply consecutive per level.
    tokens = scheme.all_tokens()[::-1]
    save_word_tokenizer(tmp_path, tokens)
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(tmp_path)).get_vocab()
    table = sid_token_table(tmp_path, scheme)
    assert table.shape == (2, 3)
    for level, size in enumerate(scheme.codebook_sizes):
        for code in range(size):
            assert table[level, code] == vocab[sid_token(level, code)]
    assert table[1, 2] == PAD
    assert len(set(table[table != PAD].tolist())) == 5


def test_sid_token_table_refuses_a_tokenizer_without_the_sid_tokens(tmp_path: Path) -> None:
    scheme = SidScheme((3, 2))
    save_word_tokenizer(tmp_path, [t for t in scheme.all_tokens() if t != "<b_1>"])
    with pytest.raises(ValueError, match=r"lacks 1 semantic-ID tokens, e\.g\. <b_1>"):
        sid_token_table(tmp_path, scheme)
