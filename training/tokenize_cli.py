"""``genrec tokenize``: every item of a dataset gets a semantic ID (``training.item_tokenizer``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from training.cli_common import DataOpt, load_data


def tokenize(
    data: DataOpt,
    out: Annotated[Path, typer.Option(help="output directory for catalog.json, trie.npz, report")],
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON ItemTokenizerConfig; options given here override it")
    ] = None,
    sources: Annotated[
        str | None, typer.Option(help="comma-separated, in code order: semantic, behavior or both (dual)")
    ] = None,
    levels: Annotated[int | None, typer.Option(help="semantic (text) k-means levels [3]")] = None,
    codebook_size: Annotated[int | None, typer.Option(help="codes per semantic level [256]")] = None,
    behavior_levels: Annotated[int | None, typer.Option(help="behavioural (SASRec) levels [1]")] = None,
    behavior_codebook_size: Annotated[
        int | None, typer.Option(help="codes per behavioural level [256]")
    ] = None,
    align: Annotated[
        bool | None,
        typer.Option("--align/--no-align", help="save codebooks for the LLM-aligned token init [on]"),
    ] = None,
    text_encoder: Annotated[
        str | None,
        typer.Option(help="item text embedder: minilm, smollm2 (hidden states) or a HF checkpoint [minilm]"),
    ] = None,
    text_max_tokens: Annotated[int | None, typer.Option(help="LLM text encoder: tokens per item [32]")] = (
        None
    ),
    last_level: Annotated[
        str | None,
        typer.Option(help="what tells items with equal codes apart: disambiguation or item (one token each)"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="k-means and SASRec seed [0]")] = None,
) -> None:
    """Give every item a semantic ID: text and/or behaviour vectors -> residual k-means + a last level."""
    from pydantic import ValidationError

    from training.item_tokenizer import tokenize_dataset
    from training.tokenizer_config import ItemTokenizerConfig

    overrides = {
        "sources": tuple(s.strip() for s in sources.split(",") if s.strip()) if sources is not None else None,
        "levels": levels,
        "codebook_size": codebook_size,
        "behavior_levels": behavior_levels,
        "behavior_codebook_size": behavior_codebook_size,
        "align": align,
        "text_encoder": text_encoder,
        "text_max_tokens": text_max_tokens,
        "last_level": last_level,
        "seed": seed,
    }
    try:
        base = json.loads(config.read_text()) if config is not None else {}
        settings = ItemTokenizerConfig.model_validate(
            {**base, **{k: v for k, v in overrides.items() if v is not None}}
        )
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {config}: {exc}", param_hint="--config") from exc
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config or the tokenizer options") from exc
    dataset = load_data(data)
    try:
        _, report = tokenize_dataset(dataset, settings, out)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(json.dumps(report.to_json(), indent=2))
