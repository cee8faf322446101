"""Artifact bundle: manifest round trip, hash verification, tampering and missing parts."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_test_helpers import make_catalog

from model.bundle import (
    CATALOG,
    FORMAT_VERSION,
    MANIFEST,
    MODEL_DIR,
    TRIE,
    BundleError,
    Manifest,
    compute_hashes,
    load_bundle,
    load_trie,
    read_manifest,
    sha256_file,
    tokenizer_hash,
    write_manifest,
)
from model.catalog import Catalog, CatalogItem
from model.trie import CompiledTrie


def write_parts(root: Path, catalog: Catalog) -> None:
    """A bundle's parts without its manifest; the model is only the files that are hashed."""
    model = root / MODEL_DIR
    model.mkdir(parents=True)
    (model / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0, "<a_0>": 1}}}))
    (model / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<|pad|>"}))
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "model.safetensors").write_bytes(b"weights of this run")
    catalog.save(root / CATALOG)
    CompiledTrie.build([item.sid for item in catalog]).save(root / TRIE)


@pytest.fixture
def catalog() -> Catalog:
    return make_catalog(10)


@pytest.fixture
def bundle_dir(tmp_path: Path, catalog: Catalog) -> Path:
    root = tmp_path / "v1"
    write_parts(root, catalog)
    write_manifest(
        root,
        version="v1",
        base_model="tiny",
        catalog=catalog,
        eval_summary={"recall@10": 0.25},
        with_titles=False,
        history_len=7,
    )
    return root


def test_write_manifest_then_load_bundle_round_trip(bundle_dir: Path, catalog: Catalog) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.root == bundle_dir
    assert bundle.version == "v1"
    assert bundle.model_dir == bundle_dir / MODEL_DIR
    assert bundle.trie_path == bundle_dir / TRIE
    manifest = bundle.manifest
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.base_model == "tiny"
    assert manifest.sid_codebook_sizes == list(catalog.scheme.codebook_sizes)
    assert manifest.num_items == len(catalog)
    assert manifest.eval_summary == {"recall@10": 0.25}
    assert manifest.extra == {"with_titles": False, "history_len": 7}
    assert manifest.created_at
    assert list(bundle.catalog) == list(catalog)
    assert bundle.catalog.scheme == catalog.scheme
    reference = CompiledTrie.build([item.sid for item in catalog])
    np.testing.assert_array_equal(bundle.trie.children, reference.children)
    np.testing.assert_array_equal(bundle.trie.leaf_item, reference.leaf_item)
    assert bundle.trie.num_levels == catalog.scheme.num_levels


def test_load_trie_reads_the_trie_and_scheme_load_bundle_reads(bundle_dir: Path) -> None:
    """What the vLLM engine process reads of a bundle its parent has already verified."""
    bundle = load_bundle(bundle_dir)
    scheme, trie = load_trie(bundle_dir)
    assert scheme == bundle.catalog.scheme
    np.testing.assert_array_equal(trie.children, bundle.trie.children)
    np.testing.assert_array_equal(trie.child_node, bundle.trie.child_node)


def test_load_bundle_accepts_a_string_path(bundle_dir: Path) -> None:
    assert load_bundle(str(bundle_dir)).root == bundle_dir


def test_manifest_on_disk_pins_the_hashes_of_the_parts(bundle_dir: Path) -> None:
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    assert set(raw["hashes"]) == {"weights", "tokenizer", "catalog", "trie"}
    assert raw["hashes"]["catalog"] == hashlib.sha256((bundle_dir / CATALOG).read_bytes()).hexdigest()
    assert raw["hashes"]["trie"] == hashlib.sha256((bundle_dir / TRIE).read_bytes()).hexdigest()
    assert raw["hashes"] == compute_hashes(bundle_dir)
    assert read_manifest(bundle_dir) == Manifest.model_validate(raw)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # more than one read block
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_tokenizer_hash_depends_on_which_file_holds_what(bundle_dir: Path) -> None:
    model = bundle_dir / MODEL_DIR
    before = tokenizer_hash(model)
    tok, cfg = (model / "tokenizer.json").read_bytes(), (model / "tokenizer_config.json").read_bytes()
    (model / "tokenizer.json").write_bytes(cfg)
    (model / "tokenizer_config.json").write_bytes(tok)
    assert tokenizer_hash(model) != before


@pytest.mark.parametrize(
    ("part", "name"),
    [
        (CATALOG, "catalog"),
        (TRIE, "trie"),
        (f"{MODEL_DIR}/tokenizer.json", "tokenizer"),
        (f"{MODEL_DIR}/tokenizer_config.json", "tokenizer"),
        (f"{MODEL_DIR}/model.safetensors", "weights"),
        (f"{MODEL_DIR}/config.json", "weights"),
    ],
)
def test_tampering_with_a_part_after_the_manifest_is_refused(bundle_dir: Path, part: str, name: str) -> None:
    path = bundle_dir / part
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(BundleError, match=rf"does not match its manifest \({name}: manifest [0-9a-f]{{12}}"):
        load_bundle(bundle_dir)


def test_a_catalog_from_another_run_is_refused(bundle_dir: Path) -> None:
    """Swapping in a different (valid) catalog and trie of the same shape is caught by the hashes."""
    other = Catalog(
        make_catalog(10).scheme,
        [CatalogItem(f"other{n}", "x", item.sid, 1) for n, item in enumerate(make_catalog(10))],
    )
    other.save(bundle_dir / CATALOG)
    CompiledTrie.build([i.sid for i in reversed(list(other))]).save(bundle_dir / TRIE)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_dir)
    message = str(info.value)
    assert "catalog: manifest" in message and "trie: manifest" in message
    assert "re-export it" in message
    assert "tokenizer" not in message


def test_rewriting_the_manifest_after_a_change_makes_the_bundle_valid_again(
    bundle_dir: Path, catalog: Catalog
) -> None:
    smaller = make_catalog(6)
    smaller.save(bundle_dir / CATALOG)
    CompiledTrie.build([i.sid for i in smaller]).save(bundle_dir / TRIE)
    with pytest.raises(BundleError):
        load_bundle(bundle_dir)
    write_manifest(bundle_dir, version="v2", base_model="tiny", catalog=smaller)
    bundle = load_bundle(bundle_dir)
    assert bundle.version == "v2"
    assert len(bundle.catalog) == 6


@pytest.mark.parametrize("part", [CATALOG, TRIE, MODEL_DIR])
def test_missing_parts_are_refused(bundle_dir: Path, part: str) -> None:
    path = bundle_dir / part
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    with pytest.raises(BundleError, match=f"incomplete: {part} is missing"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_missing_tokenizer_files_are_refused(bundle_dir: Path, name: str) -> None:
    (bundle_dir / MODEL_DIR / name).unlink()
    with pytest.raises(BundleError, match=f"file missing: .*{name}"):
        load_bundle(bundle_dir)


def test_a_directory_without_manifest_is_not_a_bundle(tmp_path: Path, catalog: Catalog) -> None:
    write_parts(tmp_path / "b", catalog)
    with pytest.raises(BundleError, match=r"is not an artifact bundle: manifest\.json not found"):
        load_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="not an artifact bundle"):
        load_bundle(tmp_path / "does-not-exist")


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"version": "v1"}),
        json.dumps([1, 2]),
        json.dumps(
            {"version": "v1", "base_model": "t", "sid_codebook_sizes": "x", "num_items": 1, "hashes": {}}
        ),
    ],
)
def test_malformed_manifests_are_refused(bundle_dir: Path, content: str) -> None:
    (bundle_dir / MANIFEST).write_text(content)
    with pytest.raises(BundleError, match="malformed manifest"):
        load_bundle(bundle_dir)


def test_a_binary_manifest_is_refused_as_a_bundle_error(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST).write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(BundleError, match="malformed manifest"):
        load_bundle(bundle_dir)


def test_manifest_item_count_must_match_the_catalog(bundle_dir: Path) -> None:
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    raw["num_items"] += 1
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="disagree on the item set"):
        load_bundle(bundle_dir)


def test_trie_depth_must_match_the_catalog_scheme(tmp_path: Path, catalog: Catalog) -> None:
    root = tmp_path / "b"
    write_parts(root, catalog)
    CompiledTrie.build([(n,) for n in range(len(catalog))]).save(root / TRIE)  # 1 level, scheme has 3
    write_manifest(root, version="v", base_model="tiny", catalog=catalog)
    with pytest.raises(BundleError, match="disagree on the item set"):
        load_bundle(root)


@pytest.mark.parametrize("dropped", ["weights", "tokenizer", "catalog", "trie"])
def test_a_manifest_that_does_not_pin_every_part_is_refused(bundle_dir: Path, dropped: str) -> None:
    """Every part must be pinned: a manifest without a part's hash would let any such part through."""
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    del raw["hashes"][dropped]
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=f"{dropped}: manifest"):
        load_bundle(bundle_dir)


def test_a_manifest_with_no_hashes_is_refused(bundle_dir: Path) -> None:
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    raw["hashes"] = {}
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))
    (bundle_dir / CATALOG).write_text((bundle_dir / CATALOG).read_text() + "\n")
    with pytest.raises(BundleError, match="does not match its manifest"):
        load_bundle(bundle_dir)


def test_unreadable_parts_pinned_by_the_manifest_raise_bundle_error(tmp_path: Path, catalog: Catalog) -> None:
    """A bundle exported with a broken trie still matches its hashes; loading must say BundleError."""
    root = tmp_path / "b"
    write_parts(root, catalog)
    (root / TRIE).write_bytes((root / TRIE).read_bytes()[:50])
    write_manifest(root, version="v", base_model="tiny", catalog=catalog)
    with pytest.raises(BundleError, match="cannot read trie"):
        load_bundle(root)


def test_unreadable_catalog_pinned_by_the_manifest_raises_bundle_error(
    tmp_path: Path, catalog: Catalog
) -> None:
    root = tmp_path / "b"
    write_parts(root, catalog)
    write_manifest(root, version="v", base_model="tiny", catalog=catalog)
    (root / CATALOG).write_text("{broken")
    write_manifest(root, version="v", base_model="tiny", catalog=catalog)
    with pytest.raises(BundleError, match="cannot read catalog"):
        load_bundle(root)


def test_a_bundle_without_weights_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / MODEL_DIR / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"no \*\.safetensors weights"):
        load_bundle(bundle_dir)


def test_a_bundle_of_another_format_version_is_refused(bundle_dir: Path) -> None:
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    raw["format_version"] = 99
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(bundle_dir)
