"""export_run: a finished run becomes a verified, immutable bundle and ``current`` follows it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from model.bundle import CATALOG, MANIFEST, MODEL_DIR, TRIE, BundleError, load_bundle
from model.catalog import Catalog, CatalogItem
from model.semantic_id import SidScheme
from model.trie import CompiledTrie
from training.base_model import add_sid_tokens, build_tiny_model
from training.export import CURRENT, export_run
from training.finetune import MERGED_DIR, RUN_CATALOG, RUN_REPORT, RUN_TRIE

SCHEME = SidScheme((2, 3))
REPORT = {
    "dataset": "Toy",
    "config": {"base_model": "tiny", "with_titles": False, "history_len": 7},
    "examples": 5,
    "steps": 3,
    "final_loss_ema": 1.5,
    "tokens": 99,
    "wall_s": 0.1,
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `genrec train` leaves behind, with a real (random, tiny) merged checkpoint."""
    root = tmp_path_factory.mktemp("export") / "run"
    catalog = Catalog(
        SCHEME,
        [CatalogItem(f"item{n}", f"Title {n}", (n // 3, n % 3), popularity=n) for n in range(6)],
    )
    base = build_tiny_model(root / "base", [item.title for item in catalog] * 5, vocab_size=300)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    add_sid_tokens(model, tokenizer, SCHEME)
    model.save_pretrained(root / MERGED_DIR)
    tokenizer.save_pretrained(root / MERGED_DIR)
    catalog.save(root / RUN_CATALOG)
    CompiledTrie.build([item.sid for item in catalog]).save(root / RUN_TRIE)
    (root / RUN_REPORT).write_text(json.dumps(REPORT))
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_writes_a_bundle_that_loads(run_dir: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    bundle = export_run(run_dir, artifacts, "v1")
    assert bundle.root == artifacts / "v1"
    assert bundle.version == "v1"

    loaded = load_bundle(artifacts / "v1")
    manifest = loaded.manifest
    assert manifest.version == "v1"
    assert manifest.base_model == "tiny"
    assert manifest.sid_codebook_sizes == [2, 3]
    assert manifest.num_items == 6
    assert manifest.extra["with_titles"] is False
    assert manifest.extra["history_len"] == 7
    assert manifest.extra["dataset"] == "Toy"
    assert manifest.extra["training"] == {"examples": 5, "steps": 3, "final_loss_ema": 1.5, "wall_s": 0.1}
    assert [item.item_id for item in loaded.catalog] == [f"item{n}" for n in range(6)]

    # The parts are byte-for-byte the run's.
    assert _tree(artifacts / "v1" / MODEL_DIR) == _tree(run_dir / MERGED_DIR)
    assert (artifacts / "v1" / CATALOG).read_bytes() == (run_dir / RUN_CATALOG).read_bytes()
    assert (artifacts / "v1" / TRIE).read_bytes() == (run_dir / RUN_TRIE).read_bytes()
    # No temporary directory left behind.
    assert sorted(p.name for p in artifacts.iterdir()) == [CURRENT, "v1"]


def test_current_points_at_the_latest_export(run_dir: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    export_run(run_dir, artifacts, "v1")
    link = artifacts / CURRENT
    assert link.is_symlink()
    assert link.readlink() == Path("v1")  # relative, so the artifacts root can move
    assert load_bundle(link).version == "v1"

    export_run(run_dir, artifacts, "v2")
    assert link.readlink() == Path("v2")
    assert load_bundle(link).version == "v2"
    assert load_bundle(artifacts / "v1").version == "v1"

    moved = tmp_path / "moved"
    shutil.move(str(artifacts), moved)
    assert load_bundle(moved / CURRENT).version == "v2"


def test_export_without_updating_current(run_dir: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    export_run(run_dir, artifacts, "v1")
    export_run(run_dir, artifacts, "v2", update_current=False)
    assert (artifacts / CURRENT).readlink() == Path("v1")
    assert load_bundle(artifacts / "v2").version == "v2"


def test_exporting_a_version_twice_is_refused(run_dir: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    export_run(run_dir, artifacts, "v1")
    manifest = (artifacts / "v1" / MANIFEST).read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        export_run(run_dir, artifacts, "v1")
    assert (artifacts / "v1" / MANIFEST).read_bytes() == manifest
    assert load_bundle(artifacts / CURRENT).version == "v1"


@pytest.mark.parametrize("part", [MERGED_DIR, RUN_CATALOG, RUN_TRIE, RUN_REPORT])
def test_incomplete_run_names_the_missing_part(run_dir: Path, tmp_path: Path, part: str) -> None:
    partial = tmp_path / "run"
    shutil.copytree(run_dir, partial)
    target = partial / part
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    artifacts = tmp_path / "artifacts"
    with pytest.raises(FileNotFoundError, match=f"incomplete: {part} missing"):
        export_run(partial, artifacts, "v1")
    assert not artifacts.exists()


@pytest.mark.parametrize("version", ["", "a/b", "../escape", CURRENT, ".", ".."])
def test_invalid_version_names_are_rejected(run_dir: Path, tmp_path: Path, version: str) -> None:
    artifacts = tmp_path / "artifacts"
    with pytest.raises(ValueError, match="invalid version name"):
        export_run(run_dir, artifacts, version)
    assert not artifacts.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_tampered_export_is_refused_by_load_bundle(run_dir: Path, tmp_path: Path) -> None:
    # The manifest really pins the copied parts: the bundle is not just "whatever is in the dir".
    bundle = export_run(run_dir, tmp_path / "artifacts", "v1")
    catalog = json.loads((bundle.root / CATALOG).read_text())
    catalog["items"][0]["title"] = "changed"
    (bundle.root / CATALOG).write_text(json.dumps(catalog))
    with pytest.raises(BundleError, match="catalog"):
        load_bundle(bundle.root)


@pytest.mark.parametrize("report", ["{not json", '{"steps": 3}', '{"config": {"base_model": "tiny"}}'])
def test_a_malformed_train_report_is_named(run_dir: Path, tmp_path: Path, report: str) -> None:
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / RUN_REPORT).write_text(report)
    artifacts = tmp_path / "artifacts"
    with pytest.raises(ValueError, match=r"train_report\.json is malformed"):
        export_run(broken, artifacts, "v1")
    assert not artifacts.exists()
