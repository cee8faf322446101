"""How every benchmark reports: the JSON printed, and written where the results are committed."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict[str, object], path: Path) -> None:
    """Print ``report`` as JSON and write it to ``path`` (parents created)."""
    text = json.dumps(report, indent=2)
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
