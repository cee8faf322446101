"""``genrec``'s offline commands (tokenize, train, export, eval, ...) without the service side.

The GPU machine has no fastapi, redis or pydantic-settings, which ``genrec_cli`` (the console
script) imports for the online commands; this entry point loads ``training.cli`` alone, from
the repository it sits in, and logs like ``genrec`` does.

    python3 benchmarks/gpu/offline_cli.py train --data ... --tokenizer ... --out ...
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training.cli import app

if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app(prog_name="genrec")
