"""Residual k-means semantic IDs from one or two sources: determinism, uniqueness, scheme fit, errors,
and the written catalog + trie + codebooks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fake_embeddings import fake_embed_16
from shared_datasets import shared_dataset

from model.catalog import Catalog
from model.trie import PAD, CompiledTrie
from training.data import InteractionData, load_lcrec, train_item_counts
from training.item_index import build_item_index, build_semantic_ids
from training.item_tokenizer import CATALOG_FILE, REPORT_FILE, TRIE_FILE, tokenize_dataset
from training.residual_kmeans import add_disambiguation_level, collision_rate, residual_kmeans
from training.sasrec import SasrecConfig
from training.sid_alignment import CODEBOOKS_FILE, SidCodebooks
from training.synthetic import generate_synthetic
from training.tokenizer_config import ItemTokenizerConfig


def clustered(n: int = 200, dim: int = 16, clusters: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) * 3
    return (centers[rng.integers(clusters, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)


def test_residual_kmeans_is_deterministic_and_in_range() -> None:
    x = clustered()
    a = residual_kmeans(x, levels=3, codebook_size=16, seed=7)
    b = residual_kmeans(x, levels=3, codebook_size=16, seed=7)
    assert a.shape == (200, 3)
    assert a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < 16
    assert not np.array_equal(a, residual_kmeans(x, levels=3, codebook_size=16, seed=8))


def test_residual_kmeans_first_level_recovers_clusters() -> None:
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 8)) * 10
    truth = np.repeat(np.arange(4), 25)
    x = centers[truth] + 0.01 * rng.normal(size=(100, 8))
    codes = residual_kmeans(x, levels=2, codebook_size=4, seed=0)
    # Same partition as the ground truth, up to relabelling.
    assert len({(int(t), int(c)) for t, c in zip(truth, codes[:, 0], strict=True)}) == 4


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (np.zeros((0, 4)), {}, "empty catalog"),
        (np.zeros(4), {}, "2-D"),
        (np.zeros((10, 4)), {"codebook_size": 11}, r"codebook_size 11 must be in 1\.\.10"),
        (np.zeros((10, 4)), {"levels": 0}, "levels must be >= 1"),
    ],
)
def test_residual_kmeans_rejects_bad_input(x: np.ndarray, kwargs: dict[str, int], message: str) -> None:
    args = {"levels": 2, "codebook_size": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        residual_kmeans(x, **args)


def test_disambiguation_numbers_items_within_each_prefix() -> None:
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3], [5, 5]])
    full = add_disambiguation_level(codes)
    np.testing.assert_array_equal(full[:, :2], codes)
    assert full[:, 2].tolist() == [0, 1, 0, 2, 1, 0]
    assert len({tuple(r) for r in full.tolist()}) == len(codes)
    # 3 distinct prefixes among 6 items: half the items collide with an earlier one.
    assert collision_rate(codes) == pytest.approx(0.5)
    assert collision_rate(np.array([[1], [2]])) == 0.0


def test_build_semantic_ids_unique_and_fit_scheme() -> None:
    config = ItemTokenizerConfig(levels=3, codebook_size=8, seed=0)
    scheme, sids, report = build_semantic_ids(clustered(300), config)
    assert len(sids) == 300
    assert len(set(sids)) == 300
    for sid in sids:
        scheme.validate(sid)
    assert scheme.codebook_sizes[:3] == (8, 8, 8)
    assert scheme.codebook_sizes[3] == max(s[3] for s in sids) + 1 == report.max_items_per_prefix
    assert report.num_items == 300
    assert report.levels == 4
    assert report.codebook_sizes == scheme.codebook_sizes
    assert all(0 < u <= 1 for u in report.usage)
    assert all(
        0 <= h <= np.log2(size) + 1e-9
        for h, size in zip(report.entropy_bits, scheme.codebook_sizes, strict=True)
    )
    assert 0 <= report.collision_rate < 1
    assert report.wall_time_s > 0
    again = build_semantic_ids(clustered(300), config)[1]
    assert again == sids


def test_more_codes_than_items_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"codebook_size=256 asks for more codes than the catalog has items \(10\)"
    ):
        build_semantic_ids(clustered(10), ItemTokenizerConfig(levels=2, codebook_size=256))
    data = load_lcrec(generate_synthetic(tmp_path / "data", num_users=10, num_items=20, num_categories=2))

    def never(texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("the config is checked before any embedding work")

    config = ItemTokenizerConfig(sources=("semantic", "behavior"), codebook_size=4, behavior_codebook_size=21)
    with pytest.raises(ValueError, match="behavior_codebook_size=21 asks for more codes"):
        tokenize_dataset(data, config, tmp_path / "out", embed=never)
    assert not (tmp_path / "out").exists()


def test_identical_embeddings_are_told_apart_by_the_last_level() -> None:
    scheme, sids, report = build_semantic_ids(np.ones((5, 4)), ItemTokenizerConfig(levels=2, codebook_size=4))
    assert len({s[:2] for s in sids}) == 1
    assert [s[2] for s in sids] == [0, 1, 2, 3, 4]
    assert report.collision_rate == pytest.approx(0.8)
    assert scheme.codebook_sizes[2] == 5


def test_empty_catalog_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty catalog"):
        build_semantic_ids(np.zeros((0, 8)), ItemTokenizerConfig())
    empty = InteractionData(name="Empty", sequences={}, items={}, source=tmp_path)
    with pytest.raises(ValueError, match="no items"):
        tokenize_dataset(empty, ItemTokenizerConfig(), tmp_path / "out", embed=fake_embed_16)


def test_config_validates() -> None:
    with pytest.raises(ValueError):
        ItemTokenizerConfig(codebook_size=0)
    with pytest.raises(ValueError):
        ItemTokenizerConfig(levels=0)
    with pytest.raises(ValueError, match="sources must be distinct names"):
        ItemTokenizerConfig(sources=("semantic", "clicks"))
    with pytest.raises(ValueError, match="sources must be distinct names"):
        ItemTokenizerConfig(sources=("semantic", "semantic"))
    with pytest.raises(ValueError, match="at least one"):
        ItemTokenizerConfig(sources=())


DUAL = ItemTokenizerConfig(
    sources=("semantic", "behavior"), levels=2, codebook_size=8, behavior_levels=1, behavior_codebook_size=4
)


def test_dual_source_ids_concatenate_independently_quantized_sources() -> None:
    text, behavior = clustered(300, dim=16, seed=0), clustered(300, dim=8, clusters=4, seed=1)
    scheme, sids, report, codebooks = build_item_index({"semantic": text, "behavior": behavior}, DUAL)
    codes = np.asarray(sids)
    np.testing.assert_array_equal(codes[:, :2], residual_kmeans(text, 2, 8, DUAL.seed))
    np.testing.assert_array_equal(codes[:, 2:3], residual_kmeans(behavior, 1, 4, DUAL.seed + 1000))
    assert len(set(sids)) == 300
    assert scheme.codebook_sizes[:3] == (8, 8, 4)
    assert report.extra["level_sources"] == ["semantic", "semantic", "behavior", "disambiguation"]
    assert report.collision_rate == pytest.approx(collision_rate(codes[:, :3]))
    # A second source can only split prefixes that the first one shares.
    assert report.collision_rate <= collision_rate(codes[:, :2])
    assert [None if v is None else v.shape for v in codebooks.vectors] == [(8, 16), (8, 16), (4, 8), None]
    again = build_item_index({"semantic": text, "behavior": behavior}, DUAL)
    assert again[1] == sids


def test_an_item_last_level_gives_every_item_its_own_token_from_its_own_vector() -> None:
    behavior = clustered(120, dim=8, clusters=4, seed=1)
    config = ItemTokenizerConfig(sources=("behavior",), behavior_codebook_size=4, last_level="item")
    scheme, sids, report, codebooks = build_item_index({"behavior": behavior}, config)
    codes = np.asarray(sids)
    # The k-means levels are what the disambiguating index has; the last code is the item's row.
    np.testing.assert_array_equal(codes[:, :1], residual_kmeans(behavior, 1, 4, config.seed))
    np.testing.assert_array_equal(codes[:, 1], np.arange(120))
    assert scheme.codebook_sizes == (4, 120)
    assert report.extra["level_sources"] == ["behavior", "item"]
    assert report.collision_rate == pytest.approx(collision_rate(codes[:, :1]))
    assert report.max_items_per_prefix == int(np.bincount(codes[:, 0]).max())
    assert codebooks.sources == ["behavior", "item"]
    np.testing.assert_array_equal(codebooks.vectors[1], behavior)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="last_level"):
        ItemTokenizerConfig(last_level="cluster")  # type: ignore[arg-type]


def test_the_order_of_sources_is_the_order_of_codes() -> None:
    text, behavior = clustered(120, dim=16, seed=0), clustered(120, dim=8, clusters=4, seed=1)
    config = DUAL.model_copy(update={"sources": ("behavior", "semantic")})
    scheme, sids, report, _ = build_item_index({"semantic": text, "behavior": behavior}, config)
    assert scheme.codebook_sizes[:3] == (4, 8, 8)
    assert report.extra["level_sources"][:3] == ["behavior", "semantic", "semantic"]
    np.testing.assert_array_equal(np.asarray(sids)[:, :1], residual_kmeans(behavior, 1, 4, config.seed))


def test_sources_must_embed_the_same_items() -> None:
    with pytest.raises(ValueError, match="different numbers of items"):
        build_item_index({"semantic": clustered(50), "behavior": clustered(40)}, DUAL)
    with pytest.raises(ValueError, match=r"no embeddings for source\(s\) \['behavior'\]"):
        build_item_index({"semantic": clustered(50)}, DUAL)


def test_tokenize_dual_trains_sasrec_and_saves_codebooks(tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path / "data", num_users=120, num_items=60, num_categories=4))
    config = DUAL.model_copy(update={"sasrec": SasrecConfig(dim=16, epochs=2, holdout_users=50)})
    catalog, report = tokenize_dataset(data, config, tmp_path / "out", embed=fake_embed_16)
    _check_artifacts(tmp_path / "out", catalog, data)
    assert report.extra["sasrec"]["epochs"] >= 1  # type: ignore[index]
    codebooks = SidCodebooks.load(tmp_path / "out" / CODEBOOKS_FILE)
    assert codebooks.sources == ["semantic", "semantic", "behavior", "disambiguation"]
    assert codebooks.vectors[2] is not None and codebooks.vectors[2].shape == (4, 16)
    # Without alignment no codebooks are written (and a stale file is removed).
    tokenize_dataset(data, config.model_copy(update={"align": False}), tmp_path / "out", embed=fake_embed_16)
    assert not (tmp_path / "out" / CODEBOOKS_FILE).exists()


def test_tokenize_with_an_item_level_saves_the_item_vectors(tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path / "data", num_users=120, num_items=60, num_categories=4))
    config = ItemTokenizerConfig(
        sources=("behavior",), behavior_codebook_size=4, last_level="item",
        sasrec=SasrecConfig(dim=16, epochs=2, holdout_users=50),
    )  # fmt: skip
    catalog, _ = tokenize_dataset(data, config, tmp_path / "out", embed=fake_embed_16)
    _check_artifacts(tmp_path / "out", catalog, data)
    assert catalog.scheme.codebook_sizes == (4, 60)
    assert sorted(item.sid[1] for item in catalog) == list(range(60))
    codebooks = SidCodebooks.load(tmp_path / "out" / CODEBOOKS_FILE)
    assert codebooks.sources == ["behavior", "item"]
    assert codebooks.vectors[1] is not None and codebooks.vectors[1].shape == (60, 16)


def _check_artifacts(out: Path, catalog: Catalog, data: InteractionData) -> None:
    loaded = Catalog.load(out / CATALOG_FILE)
    assert [(i.item_id, i.title, i.sid, i.popularity) for i in loaded] == [
        (i.item_id, i.title, i.sid, i.popularity) for i in catalog
    ]
    assert loaded.scheme == catalog.scheme
    trie = CompiledTrie.load(out / TRIE_FILE)
    assert trie.num_levels == catalog.scheme.num_levels
    for index, item in enumerate(loaded):
        node = trie.walk(item.sid)
        assert node != PAD
        assert int(trie.leaf_item[node]) == index
    assert int((trie.leaf_item != PAD).sum()) == len(loaded)
    counts = train_item_counts(data)
    assert all(item.popularity == counts[item.item_id] for item in loaded)
    assert [item.item_id for item in loaded] == sorted(data.items, key=int)
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["num_items"] == len(loaded)
    assert report["codebook_sizes"] == list(catalog.scheme.codebook_sizes)


def test_tokenize_dataset_writes_catalog_trie_and_report(tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path / "data", num_users=80, num_items=60, num_categories=4))
    config = ItemTokenizerConfig(levels=3, codebook_size=8, seed=0)
    catalog, report = tokenize_dataset(data, config, tmp_path / "out", embed=fake_embed_16)
    assert len(catalog) == 60
    assert report.embed_time_s >= 0
    assert catalog.at(0).title == data.items["0"].title
    assert catalog.at(0).category == data.items["0"].categories != ""  # what category= filters on
    assert Catalog.load(tmp_path / "out" / CATALOG_FILE).at(0).category == catalog.at(0).category
    _check_artifacts(tmp_path / "out", catalog, data)
    again, _ = tokenize_dataset(data, config, tmp_path / "out2", embed=fake_embed_16)
    assert [i.sid for i in again] == [i.sid for i in catalog]


def test_tokenize_dataset_rejects_a_bad_embedding(tmp_path: Path) -> None:
    data = load_lcrec(generate_synthetic(tmp_path / "data", num_users=10, num_items=20, num_categories=2))
    with pytest.raises(ValueError, match="embed returned shape"):
        tokenize_dataset(
            data, ItemTokenizerConfig(codebook_size=4), tmp_path / "out", embed=lambda texts: np.zeros((3, 4))
        )


@pytest.mark.slow
def test_office_end_to_end_with_the_real_encoder(tmp_path: Path) -> None:
    path = shared_dataset("amazon2014_office_lcrec")
    data = load_lcrec(path)
    catalog, report = tokenize_dataset(data, ItemTokenizerConfig(), tmp_path)
    assert len(catalog) == report.num_items == 2420
    assert catalog.scheme.codebook_sizes[:3] == (256, 256, 256)
    assert len({item.sid for item in catalog}) == 2420
    # Real text gives a well-used first level; published RQ-KMeans on Office collides ~26% at 3 levels.
    assert report.usage[0] > 0.9
    assert report.collision_rate < 0.4
    _check_artifacts(tmp_path, catalog, data)
