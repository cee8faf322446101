"""Compiled prefix trie: structure against a dict trie, walks, token space and the npz round trip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_test_helpers import DictTrie, make_catalog, random_sids, token_of_code

from model.semantic_id import SemanticId, SidScheme
from model.trie import PAD, ROOT, CompiledTrie


@pytest.fixture
def sids() -> list[SemanticId]:
    return [item.sid for item in make_catalog(12)]


def test_every_catalog_item_reaches_exactly_its_leaf() -> None:
    catalog = make_catalog(20)
    trie = CompiledTrie.build([item.sid for item in catalog])
    leaves = set()
    for index, item in enumerate(catalog):
        node = trie.walk(item.sid)
        assert node != PAD
        assert trie.depth[node] == catalog.scheme.num_levels
        assert trie.leaf_item[node] == index
        assert catalog.at(int(trie.leaf_item[node])) == item
        assert trie.allowed(node) == []
        leaves.add(node)
    assert len(leaves) == len(catalog)
    # Leaves are exactly the nodes that carry an item.
    assert set(np.nonzero(trie.leaf_item != PAD)[0].tolist()) == leaves


def test_small_trie_layout() -> None:
    trie = CompiledTrie.build([(0, 1), (1, 0), (1, 1)])
    assert trie.num_levels == 2
    assert trie.num_nodes == 6  # root, 0, 0/1, 1, 1/0, 1/1
    assert trie.max_children == 2
    assert trie.allowed(ROOT) == [0, 1]
    assert trie.allowed(trie.walk([0])) == [1]
    assert trie.allowed(trie.walk([1])) == [0, 1]
    assert trie.children[trie.walk([0])].tolist() == [1, PAD]
    assert trie.leaf_item[trie.walk([1, 0])] == 1
    assert [int(trie.depth[trie.walk(p)]) for p in ([], [1], [1, 1])] == [0, 1, 2]
    for array in (trie.children, trie.child_node, trie.depth, trie.leaf_item):
        assert array.dtype == np.int64


def test_walk_of_empty_prefix_is_the_root(sids: list[SemanticId]) -> None:
    trie = CompiledTrie.build(sids)
    assert trie.walk([]) == ROOT
    assert trie.depth[ROOT] == 0
    assert trie.leaf_item[ROOT] == PAD


def test_invalid_prefixes_have_no_node_and_no_children() -> None:
    trie = CompiledTrie.build([(0, 1, 0), (0, 1, 1), (2, 0, 1)])
    assert trie.walk([1]) == PAD
    assert trie.walk([0, 0]) == PAD
    assert trie.walk([2, 0, 0]) == PAD
    assert trie.walk([7, 7, 7]) == PAD
    assert trie.walk([0, 1, 1, 0]) == PAD  # past a leaf
    assert trie.child(ROOT, 1) == PAD
    assert trie.child(ROOT, PAD) == PAD
    leaf = trie.walk([0, 1, 1])
    assert trie.child(leaf, 0) == PAD
    assert trie.allowed(leaf) == []


def test_child_follows_each_code(sids: list[SemanticId]) -> None:
    trie = CompiledTrie.build(sids)
    for sid in sids:
        node = ROOT
        for depth, code in enumerate(sid, start=1):
            assert code in trie.allowed(node)
            node = trie.child(node, code)
            assert node != PAD
            assert trie.depth[node] == depth
        assert node == trie.walk(sid)


def test_build_rejects_duplicates_mixed_lengths_and_empty() -> None:
    with pytest.raises(ValueError, match=r"\(1, 2\) appears twice \(items 0 and 2\)"):
        CompiledTrie.build([(1, 2), (0, 0), (1, 2)])
    with pytest.raises(ValueError, match="expected 2"):
        CompiledTrie.build([(1, 2), (0, 0, 1)])
    with pytest.raises(ValueError, match="expected 2"):
        CompiledTrie.build([(1, 2), (0,)])
    with pytest.raises(ValueError, match="empty"):
        CompiledTrie.build([])


def test_single_level_trie() -> None:
    trie = CompiledTrie.build([(4,), (0,), (2,)])
    assert trie.num_levels == 1
    assert trie.allowed(ROOT) == [0, 2, 4]
    assert [int(trie.leaf_item[trie.walk([c])]) for c in (4, 0, 2)] == [0, 1, 2]


@st.composite
def scheme_and_sids(draw: st.DrawFn) -> tuple[SidScheme, list[SemanticId]]:
    sizes = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    scheme = SidScheme(sizes)
    space = int(np.prod(sizes))
    seed = draw(st.integers(0, 2**32 - 1))
    count = draw(st.integers(1, min(space, 40)))
    return scheme, random_sids(np.random.default_rng(seed), scheme, count)


@settings(max_examples=80, deadline=None)
@given(scheme_and_sids())
def test_trie_matches_a_dict_trie(case: tuple[SidScheme, list[SemanticId]]) -> None:
    scheme, sids = case
    trie = CompiledTrie.build(sids)
    reference = DictTrie(sids)
    prefixes = reference.prefixes()
    assert trie.num_nodes == len(prefixes)
    assert trie.num_levels == scheme.num_levels
    assert trie.max_children == max(len(reference.children(p)) for p in prefixes)
    nodes = set()
    for prefix in prefixes:
        node = trie.walk(prefix)
        assert node != PAD
        nodes.add(node)
        assert trie.depth[node] == len(prefix)
        assert trie.allowed(node) == reference.children(prefix)
        row = trie.children[node]
        width = len(reference.children(prefix))
        assert (row[width:] == PAD).all() and (trie.child_node[node, width:] == PAD).all()
        expected_leaf = reference.lookup(prefix) if len(prefix) == scheme.num_levels else PAD
        assert trie.leaf_item[node] == expected_leaf
    assert nodes == set(range(trie.num_nodes))
    # Codes that are not children lead nowhere.
    for prefix in prefixes[:10]:
        node = trie.walk(prefix)
        for code in range(-1, 8):
            if code not in reference.children(prefix):
                assert trie.child(node, code) == PAD


def test_to_token_space_maps_each_child_through_its_level() -> None:
    catalog = make_catalog(17)
    scheme = catalog.scheme
    trie = CompiledTrie.build([i.sid for i in catalog])
    table = token_of_code(scheme)
    tokens = trie.to_token_space(table)
    assert tokens.shape == trie.children.shape
    for node in range(trie.num_nodes):
        for slot in range(trie.max_children):
            code = trie.children[node, slot]
            if code == PAD:
                assert tokens[node, slot] == PAD
            else:
                assert tokens[node, slot] == table[trie.depth[node], code]
    # Leaves have no children, so no tokens.
    leaves = trie.depth == scheme.num_levels
    assert (tokens[leaves] == PAD).all()
    # Level 0 children are level-0 tokens, e.g. root row.
    assert tokens[ROOT][tokens[ROOT] != PAD].tolist() == [table[0, c] for c in trie.allowed(ROOT)]


def test_save_load_round_trip(tmp_path: Path) -> None:
    catalog = make_catalog(23)
    trie = CompiledTrie.build([i.sid for i in catalog])
    path = tmp_path / "trie.npz"
    trie.save(path)
    loaded = CompiledTrie.load(path)
    assert loaded.num_levels == trie.num_levels
    assert isinstance(loaded.num_levels, int)
    for name in ("children", "child_node", "depth", "leaf_item"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(trie, name))
        assert getattr(loaded, name).dtype == getattr(trie, name).dtype
    for index, item in enumerate(catalog):
        assert loaded.leaf_item[loaded.walk(item.sid)] == index
    assert zipfile.is_zipfile(path)


def test_load_of_a_missing_file_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read trie"):
        CompiledTrie.load(tmp_path / "missing.npz")


def test_load_of_a_non_npz_file_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "trie.npz"
    path.write_bytes(b"definitely not numpy")
    with pytest.raises(ValueError, match="cannot read trie"):
        CompiledTrie.load(path)


def test_load_of_an_npz_without_the_trie_arrays_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "trie.npz"
    with path.open("wb") as fh:
        np.savez(fh, children=np.zeros((1, 1), np.int64))
    with pytest.raises(ValueError, match="cannot read trie"):
        CompiledTrie.load(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_load_of_a_truncated_file_raises_value_error(tmp_path: Path, fraction: float) -> None:
    path = tmp_path / "trie.npz"
    CompiledTrie.build([i.sid for i in make_catalog(12)]).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match="cannot read trie"):
        CompiledTrie.load(path)


def test_load_of_a_corrupted_file_raises_value_error(tmp_path: Path) -> None:
    """Damaged bytes either still load or raise ValueError, never a zipfile/zlib/EOF error."""
    path = tmp_path / "trie.npz"
    CompiledTrie.build([i.sid for i in make_catalog(12)]).save(path)
    original = path.read_bytes()
    rng = np.random.default_rng(0)
    for _ in range(200):
        damaged = bytearray(original)
        for position in rng.integers(len(damaged), size=3):
            damaged[position] = int(rng.integers(256))
        path.write_bytes(bytes(damaged))
        try:
            CompiledTrie.load(path)
        except ValueError as exc:
            assert "cannot read trie" in str(exc)
