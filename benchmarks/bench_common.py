"""What every benchmark shares: where the data is read and how results are reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("GENREC_DATASETS", REPO.parent / "shared" / "datasets"))
BEAUTY = DATASETS / "amazon2014_beauty_p5order"
RESULTS = REPO / "benchmarks" / "results"


def emit(report: dict[str, object], path: Path) -> None:
    """Print ``report`` as JSON and write it to ``path`` (parents created)."""
    text = json.dumps(report, indent=2)
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
