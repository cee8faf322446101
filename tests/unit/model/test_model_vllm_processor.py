"""The vLLM V1 trie processor driven through vLLM's own BatchUpdate protocol, against a dict trie.

The processor is built around a TrieMask directly (its constructor only locates the bundle's
files inside the engine process); everything after that is the code vLLM runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_test_helpers import DictTrie, random_sids, token_of_code, vocab_size_for

from model.semantic_id import SemanticId, SidScheme
from model.trie import CompiledTrie
from model.trie_mask import TrieMask

vllm_interface = pytest.importorskip("vllm.v1.sample.logits_processor")
BatchUpdate = vllm_interface.BatchUpdate
MoveDirectionality = vllm_interface.MoveDirectionality

from vllm import SamplingParams  # noqa: E402

from model.vllm_processor import NODE_KEY, TrieLogitsProcessor  # noqa: E402

CPU = torch.device("cpu")


def make_processor(scheme: SidScheme, sids: list[SemanticId]) -> TrieLogitsProcessor:
    processor = TrieLogitsProcessor.__new__(TrieLogitsProcessor)
    processor.mask = TrieMask(CompiledTrie.build(sids), token_of_code(scheme), vocab_size_for(scheme), CPU)
    processor.rows = {}
    processor.device = CPU
    return processor


def params(node: int | None) -> SamplingParams:
    return SamplingParams(max_tokens=4, extra_args=None if node is None else {NODE_KEY: node})


def allowed(processor: TrieLogitsProcessor, batch_size: int, vocab: int) -> list[set[int]]:
    logits = torch.zeros((batch_size, vocab))
    out = processor.apply(logits)
    return [set(np.flatnonzero(np.isfinite(row.numpy())).tolist()) for row in out]


@st.composite
def trie_and_paths(draw: st.DrawFn) -> tuple[SidScheme, list[SemanticId], list[int]]:
    sizes = tuple(draw(st.lists(st.integers(1, 6), min_size=2, max_size=4)))
    scheme = SidScheme(sizes)
    count = draw(st.integers(1, min(int(np.prod(sizes)), 40)))
    sids = random_sids(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), scheme, count)
    picks = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=6))
    return scheme, sids, picks


@settings(max_examples=40, deadline=None)
@given(trie_and_paths())
def test_rows_follow_their_generated_tokens_through_the_trie(
    case: tuple[SidScheme, list[SemanticId], list[int]],
) -> None:
    """Each opted-in row is masked to the dict trie's children of the prefix it generated so far;
    a row without the key is left alone."""
    scheme, sids, picks = case
    processor = make_processor(scheme, sids)
    reference, table, vocab = DictTrie(sids), token_of_code(scheme), vocab_size_for(scheme)
    outputs: list[list[int]] = [[] for _ in picks]
    batch = len(picks) + 1  # the last row does not opt in
    added = [(row, params(0), None, outputs[row]) for row in range(len(picks))]
    added.append((len(picks), params(None), None, []))
    processor.update_state(BatchUpdate(batch, removed=[], added=added, moved=[]))
    for level in range(scheme.num_levels):
        masks = allowed(processor, batch, vocab)
        for row, pick in enumerate(picks):
            prefix = sids[pick][:level]
            assert masks[row] == {int(table[level, code]) for code in reference.children(prefix)}
        assert len(masks[-1]) == vocab
        for row, pick in enumerate(picks):
            outputs[row].append(int(table[level, sids[pick][level]]))  # vLLM appends in place
        processor.update_state(None)


def test_moves_swaps_and_removals_keep_each_request_on_its_own_node() -> None:
    scheme = SidScheme((3, 3))
    sids = [(0, 0), (0, 1), (1, 2), (2, 0)]
    processor = make_processor(scheme, sids)
    table, vocab = token_of_code(scheme), vocab_size_for(scheme)
    first = {code: processor.mask.trie.child(0, code) for code in (0, 1, 2)}
    added = [(i, params(first[code]), None, []) for i, code in enumerate((0, 1, 2))]
    processor.update_state(BatchUpdate(3, removed=[], added=added, moved=[]))
    children = {0: {int(table[1, 0]), int(table[1, 1])}, 1: {int(table[1, 2])}, 2: {int(table[1, 0])}}
    assert allowed(processor, 3, vocab) == [children[0], children[1], children[2]]

    processor.update_state(BatchUpdate(3, removed=[], added=[], moved=[(0, 2, MoveDirectionality.SWAP)]))
    assert allowed(processor, 3, vocab) == [children[2], children[1], children[0]]

    processor.update_state(
        BatchUpdate(2, removed=[1], added=[], moved=[(2, 1, MoveDirectionality.UNIDIRECTIONAL)])
    )
    masks = allowed(processor, 2, vocab)
    assert masks == [children[2], children[0]]

    # A new request without the key replaces row 0: it is no longer masked.
    processor.update_state(BatchUpdate(2, removed=[], added=[(0, params(None), None, [])], moved=[]))
    assert len(allowed(processor, 2, vocab)[0]) == vocab


def test_a_non_integer_node_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be an int trie node id"):
        TrieLogitsProcessor.validate_params(SamplingParams(extra_args={NODE_KEY: "root"}))
