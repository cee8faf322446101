"""Prompt templates shared by fine-tuning and serving.

Training and serving must produce byte-identical prompts, so both build them here. Prompts
are encoded on their own and the semantic-ID tokens are appended as ids, so the prompt's
tokenization never depends on what follows it.
"""

from __future__ import annotations

from collections.abc import Sequence

from model.catalog import CatalogItem
from model.semantic_id import SidScheme

NEXT_ITEM_INSTRUCTION = "A user bought these items, oldest first. Predict the next item."
ANSWER_CUE = "Next item:"


def next_item_prompt(history: Sequence[CatalogItem], scheme: SidScheme, *, with_titles: bool = True) -> str:
    """The next-item prompt: instruction, numbered history (IDs and optionally titles), answer cue."""
    lines = [NEXT_ITEM_INSTRUCTION]
    for position, item in enumerate(history, start=1):
        sid = scheme.format(item.sid)
        lines.append(f"{position}. {sid} {item.title}" if with_titles else f"{position}. {sid}")
    lines.append(ANSWER_CUE)
    return "\n".join(lines)


def encode_prompt(tokenizer: object, text: str) -> list[int]:
    """Token ids of a prompt, exactly as both training and serving feed it to the model."""
    encoded = tokenizer(text, add_special_tokens=True)  # type: ignore[operator]
    return list(encoded["input_ids"])
