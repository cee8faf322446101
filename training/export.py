"""Package a fine-tuning run as a served artifact bundle (``artifacts/<version>/``)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from model.bundle import CATALOG, MODEL_DIR, TRIE, ArtifactBundle, load_bundle, write_manifest
from model.catalog import Catalog
from training.finetune import MERGED_DIR, RUN_CATALOG, RUN_REPORT, RUN_TRIE

logger = logging.getLogger(__name__)

CURRENT = "current"


def export_run(
    run_dir: Path, artifacts_root: Path, version: str, *, update_current: bool = True
) -> ArtifactBundle:
    """Copy the merged model, catalog and trie of ``run_dir`` into a new, verified bundle.

    Refuses to overwrite an existing version (bundles are immutable once served). With
    ``update_current`` the ``current`` symlink is pointed at the new version.
    """
    for part in (MERGED_DIR, RUN_CATALOG, RUN_TRIE, RUN_REPORT):
        if not (run_dir / part).exists():
            raise FileNotFoundError(
                f"run {run_dir} is incomplete: {part} missing (did `genrec train` finish?)"
            )
    if not version or "/" in version or version in (CURRENT, ".", ".."):
        raise ValueError(f"invalid version name {version!r}")
    try:
        report = json.loads((run_dir / RUN_REPORT).read_text())
        config = report["config"]
        base_model, with_titles = str(config["base_model"]), bool(config["with_titles"])
        history_len = int(config["history_len"])
        prompt_align = int(config.get("prompt_align", 1))  # runs from before alignment: none
        prompt_format = str(config.get("prompt_format", "lines"))  # runs from before the compact format
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{run_dir / RUN_REPORT} is malformed ({exc!r}); re-run `genrec train`") from exc
    root = artifacts_root / version
    if root.exists():
        raise FileExistsError(f"{root} already exists; bundles are immutable, pick a new --version")
    tmp = artifacts_root / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(run_dir / MERGED_DIR, tmp / MODEL_DIR)
    shutil.copy(run_dir / RUN_CATALOG, tmp / CATALOG)
    shutil.copy(run_dir / RUN_TRIE, tmp / TRIE)
    write_manifest(
        tmp,
        version=version,
        base_model=base_model,
        catalog=Catalog.load(tmp / CATALOG),
        with_titles=with_titles,
        history_len=history_len,
        prompt_align=prompt_align,
        prompt_format=prompt_format,
        dataset=report.get("dataset"),
        training={k: report[k] for k in ("examples", "steps", "final_loss_ema", "wall_s") if k in report},
    )
    tmp.rename(root)
    bundle = load_bundle(root)
    if update_current:
        link = artifacts_root / CURRENT
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(version)
    logger.info("exported %s (%d items)", root, len(bundle.catalog))
    return bundle
