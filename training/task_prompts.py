"""The prompt text of a non-next-item task sample: header, numbered history lines, footer.

Shared by encoding (``training.encoding``) and the tiny model's tokenizer corpus; next-item
prompts use the serving template (``model.prompts``) instead. :func:`trimmed` shortens a
sample's history when its prompt is over the token budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from model.catalog import Catalog, CatalogItem
from training.task_context import Sample

MASK = "[MASK]"


def history_lines(
    catalog: Catalog, history: Sequence[str], mask_at: int | None, with_titles: bool
) -> list[str]:
    lines = []
    for position, item_id in enumerate(history, start=1):
        if position - 1 == mask_at:
            lines.append(f"{position}. {MASK}")
            continue
        item: CatalogItem = catalog[item_id]
        sid = catalog.scheme.format(item.sid)
        lines.append(f"{position}. {sid} {item.title}" if with_titles else f"{position}. {sid}")
    return lines


def render_prompt(sample: Sample, catalog: Catalog, with_titles: bool) -> str:
    """The prompt text of a non-next-item sample (header, history lines, footer)."""
    parts = [sample.header] if sample.header else []
    parts.extend(history_lines(catalog, sample.history, sample.mask_at, with_titles))
    if sample.footer:
        parts.append(sample.footer)
    return "\n".join(parts)


def trimmed(sample: Sample) -> Sample | None:
    """The sample with its oldest history item dropped (never the masked one); None if it can't be."""
    if not sample.history:
        return None
    history, mask_at = sample.history, sample.mask_at
    if mask_at is None:
        history = history[1:]
    elif mask_at > 0:
        history, mask_at = history[1:], mask_at - 1
    elif len(history) > 1:
        history = history[:-1]  # the masked item is the oldest: drop the newest instead
    else:
        return None
    return replace(sample, history=history, mask_at=mask_at)
