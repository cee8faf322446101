"""Prompt templates shared by fine-tuning and serving.

Training and serving must produce byte-identical prompts, so both build them here. Prompts
are encoded on their own and the semantic-ID tokens are appended as ids, so the prompt's
tokenization never depends on what follows it.

Prompts can be left-padded to a multiple of ``align`` tokens. The engine scores every beam of
a prompt as a new request that shares the prompt's KV blocks through prefix caching, and only
*full* blocks are shared: an aligned prompt leaves each beam just its own ID prefix to compute
instead of the prompt's partial last block (3.4x faster decoding on Beauty, CPU). Padding is
part of the prompt format, so a model is trained with the alignment it is served with.
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


def encode_prompt(tokenizer: object, text: str, align: int = 1) -> list[int]:
    """Token ids of a prompt, exactly as both training and serving feed it to the model.

    With ``align > 1`` the ids are left-padded with the pad token (EOS when there is none) to
    a multiple of ``align``.
    """
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])  # type: ignore[operator]
    padding = -len(ids) % align
    if padding:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = tokenizer.eos_token_id  # type: ignore[attr-defined]
        ids = [int(pad_id)] * padding + ids
    return ids
