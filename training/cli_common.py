"""What the offline commands share: the ``--data`` option and loading the dataset it names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.data import DataError, InteractionData, load_lcrec

DataOpt = Annotated[
    Path, typer.Option("--data", help="LC-Rec dataset directory (X.inter.json + X.item.json)")
]


def load_data(path: Path) -> InteractionData:
    """The dataset at ``path``; a missing or malformed one is a usage error naming ``--data``."""
    try:
        return load_lcrec(path)
    except (DataError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc
