"""Artifact bundle: everything serving needs, with a manifest that pins it together.

Layout of ``artifacts/<version>/``::

    manifest.json   version, base model, SID shape, sha256 of weights, tokenizer, catalog, trie
    model/          merged HF checkpoint with the extended tokenizer
    catalog.json    item id <-> semantic ID, title, popularity
    trie.npz        compiled prefix trie of every valid semantic ID

Loading recomputes the hashes and refuses a bundle whose parts disagree with its manifest,
so a catalog from one training run can never be served with the model of another.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from model.catalog import Catalog
from model.semantic_id import SidScheme
from model.trie import CompiledTrie

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MODEL_DIR = "model"
CATALOG = "catalog.json"
TRIE = "trie.npz"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A bundle is missing parts or its parts do not match its manifest."""


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    version: str
    base_model: str
    sid_codebook_sizes: list[int]
    num_items: int
    hashes: dict[str, str]
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    eval_summary: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if not path.is_file():
            raise BundleError(f"file missing: {path}")
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def tokenizer_hash(model_dir: Path) -> str:
    """One hash over the tokenizer files of a checkpoint (vocabulary and added SID tokens)."""
    return _files_hash([model_dir / name for name in TOKENIZER_FILES])


def weights_hash(model_dir: Path) -> str:
    """One hash over the model config and every safetensors shard."""
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise BundleError(f"no *.safetensors weights in {model_dir}")
    return _files_hash([model_dir / "config.json", *shards])


def compute_hashes(root: Path) -> dict[str, str]:
    return {
        "weights": weights_hash(root / MODEL_DIR),
        "tokenizer": tokenizer_hash(root / MODEL_DIR),
        "catalog": sha256_file(root / CATALOG),
        "trie": sha256_file(root / TRIE),
    }


def write_manifest(root: Path, *, version: str, base_model: str, catalog: Catalog, **extra: Any) -> Manifest:
    """Hash the parts already written under ``root`` and write the manifest that pins them."""
    manifest = Manifest(
        version=version,
        base_model=base_model,
        sid_codebook_sizes=list(catalog.scheme.codebook_sizes),
        num_items=len(catalog),
        hashes=compute_hashes(root),
        eval_summary=extra.pop("eval_summary", {}),
        extra=extra,
    )
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return manifest


@dataclass(frozen=True)
class ArtifactBundle:
    root: Path
    manifest: Manifest
    catalog: Catalog
    trie: CompiledTrie

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def trie_path(self) -> Path:
        return self.root / TRIE

    @property
    def version(self) -> str:
        return self.manifest.version


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not an artifact bundle: {MANIFEST} not found")
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:  # JSON, UTF-8 and schema errors
        raise BundleError(f"malformed manifest {path}: {exc}") from exc


def load_trie(root: Path) -> tuple[SidScheme, CompiledTrie]:
    """A bundle's trie and the ID scheme it spells, read without verifying the bundle again: for
    a process handed a bundle that its parent loaded (vLLM's engine process, where the trie
    logits processor is built)."""
    manifest = read_manifest(root)
    return SidScheme(tuple(manifest.sid_codebook_sizes)), CompiledTrie.load(root / TRIE)


def verify_bundle(root: Path, manifest: Manifest) -> None:
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"bundle {root} has format version {manifest.format_version}; "
            f"this genrec reads version {FORMAT_VERSION}"
        )
    for part in (MODEL_DIR, CATALOG, TRIE):
        if not (root / part).exists():
            raise BundleError(f"bundle {root} is incomplete: {part} is missing")
    actual = compute_hashes(root)
    # Every part must be pinned: a hash missing from the manifest is a mismatch, not a pass.
    names = [*actual, *(name for name in manifest.hashes if name not in actual)]
    bad = [name for name in names if manifest.hashes.get(name) != actual.get(name)]
    if bad:
        details = ", ".join(
            f"{n}: manifest {manifest.hashes.get(n, '?')[:12]} != actual {actual.get(n, '?')[:12]}"
            for n in bad
        )
        raise BundleError(f"bundle {root} does not match its manifest ({details}); re-export it")


def load_bundle(root: Path | str) -> ArtifactBundle:
    """Load and verify a bundle; raises BundleError with the reason if it cannot be served."""
    root = Path(root)
    manifest = read_manifest(root)
    verify_bundle(root, manifest)
    try:
        catalog = Catalog.load(root / CATALOG)
        trie = CompiledTrie.load(root / TRIE)
    except ValueError as exc:
        raise BundleError(f"bundle {root}: {exc}") from exc
    if len(catalog) != manifest.num_items or trie.num_levels != catalog.scheme.num_levels:
        raise BundleError(f"bundle {root}: catalog, trie and manifest disagree on the item set")
    logger.info("loaded bundle %s (%d items, %d levels)", manifest.version, len(catalog), trie.num_levels)
    return ArtifactBundle(root=root, manifest=manifest, catalog=catalog, trie=trie)
