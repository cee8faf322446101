"""Running the genrec CLI in tests and reading its (Rich-framed) output."""

from __future__ import annotations

from typer.testing import CliRunner

import genrec_cli

BOX = "│╭╮╰╯─"


def run_genrec(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(genrec_cli.app, list(args))
    return result.exit_code, result.output


def flat(text: str) -> str:
    """Output without the error panel's frame and line breaks (Rich wraps long paths anywhere)."""
    return "".join(ch for ch in text if ch not in BOX and not ch.isspace())


def mentions(output: str, *needles: object) -> bool:
    flattened = flat(output)
    return all(flat(str(needle)) in flattened for needle in needles)
