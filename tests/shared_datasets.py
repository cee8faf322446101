"""Where tests find the real datasets: beside the checkout (never inside it), or $GENREC_DATASETS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATASETS = Path(
    os.environ.get("GENREC_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
)


def shared_dataset(name: str) -> Path:
    """Path of a shared dataset, or skip the test (naming the path it looked at) when absent."""
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {path} not available (set GENREC_DATASETS to its folder)")
    return path
