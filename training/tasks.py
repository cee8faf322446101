"""The fine-tuning task mixture: one small builder per task, all from the training split only.

Every task is a (prompt, answer) pair; only the answer tokens carry loss. Builders are
tokenizer-free: they return :class:`training.task_context.Sample` objects (item ids and text),
which ``training.encoding`` encodes; the mixture's settings are ``training.task_mixture``'s.
The tasks (LC-Rec / EAGER-LLM / Semantic Convergence style):

``next_item``        history -> the next item's semantic ID (the served task; its prompt is
                     byte-identical to serving's, built by ``model.topk.PromptBuilder``).
``sid_to_title``     an item's semantic ID -> its title.
``title_to_sid``     an item's title (or its full text: title, brand, categories,
                     description) -> its semantic ID.
``source_recon``     dual-source IDs only: from one source's codes (e.g. the text codes)
                     predict the other source's codes (the behaviour codes), both ways.
``prefix_recon``     multi-scale reconstruction: title + the first ``k`` codes of the ID ->
                     the remaining codes (``k`` drawn from 1..levels-1).
``masked_item``      Masked Item Modeling in words: a window of the user's training history
                     with one item replaced by ``[MASK]`` -> the masked item's ID.
``bpr``              BPR in words: history + two candidates (the real next item and a sampled
                     item the user never had in training), shuffled -> the preferred one's ID.
``negative``         negative sampling (Semantic Convergence): history + one candidate, the
                     real next item or a sampled non-interacted item, 50/50 -> ``yes``/``no``.

Leakage rule: a user's sequence ``s`` contributes only its training part ``s[:-2]`` (the
validation target ``s[-2]`` and test target ``s[-1]`` are never read), and item-level tasks
only use items that occur in some training part. Negatives are drawn uniformly from the
catalog minus the user's training items (the held-out targets are not used to exclude
anything either, so a negative can by rare chance be a held-out item; it is never an answer).

Counts: ``weight`` is examples per epoch relative to next-item, i.e. ``round(weight * N)``
where ``N`` is the number of next-item training examples. A task draws its sources by
cycling through a seeded shuffle of its pool, so every pool entry is used about equally.
Everything is deterministic per seed (each task has its own ``random.Random``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence

from training.data import Example
from training.task_context import Sample, TaskContext, cycle
from training.task_mixture import (
    BPR,
    MASKED_ITEM,
    NEGATIVE,
    NEXT_ITEM,
    PREFIX_RECON,
    SID_TO_TITLE,
    SOURCE_RECON,
    TITLE_TO_SID,
    TaskMixture,
)
from training.task_prompts import MASK
from training.tokenizer_config import DISAMBIGUATION, ITEM

logger = logging.getLogger(__name__)

YES, NO = "yes", "no"


def _known(ctx: TaskContext, items: Sequence[str]) -> tuple[str, ...]:
    return tuple(i for i in items if ctx.known(i))


# ---------------------------------------------------------------------------------------------
# Builders: (context, count, rng) -> samples


def build_next_item(ctx: TaskContext, count: int, rng: random.Random) -> list[Sample]:
    pool = [e for e in ctx.train_examples if ctx.known(e.target)]
    if count == len(pool):  # weight 1: every example once, in split order
        chosen: Iterator[Example] = iter(pool)
    else:
        chosen = cycle(pool, count, rng)
    return [
        Sample(NEXT_ITEM, history=e.history, answer_tokens=ctx.sid_tokens(e.target),
               answer_item=e.target, user_id=e.user_id)
        for e in chosen
    ]  # fmt: skip


def build_sid_to_title(ctx: TaskContext, count: int, rng: random.Random) -> list[Sample]:
    out = []
    for item_id in cycle(ctx.train_items, count, rng):
        sid = "".join(ctx.sid_tokens(item_id))
        out.append(
            Sample(SID_TO_TITLE, header=f"What is the title of item {sid}?", footer="Title:",
                   answer_text=ctx.catalog[item_id].title, answer_item=item_id)
        )  # fmt: skip
    return out


def build_title_to_sid(ctx: TaskContext, count: int, rng: random.Random) -> list[Sample]:
    out = []
    for item_id in cycle(ctx.train_items, count, rng):
        title = ctx.catalog[item_id].title
        text = ctx.item_text.get(item_id, title)
        if rng.random() < 0.5 or text == title:
            header = f"Which item has the title: {title}?"
        else:
            header = f"Which item is described as: {text}?"
        out.append(
            Sample(TITLE_TO_SID, header=header, footer="Item:", answer_tokens=ctx.sid_tokens(item_id),
                   answer_item=item_id)
        )  # fmt: skip
    return out


def _source_levels(ctx: TaskContext) -> dict[str, list[int]]:
    levels: dict[str, list[int]] = {}
    for level, source in enumerate(ctx.sources):
        if source not in (DISAMBIGUATION, ITEM):  # the last level names the item, not a source
            levels.setdefault(source, []).append(level)
    return levels


def build_source_recon(ctx: TaskContext, count: int, rng: random.Random) -> list[Sample]:
    """From one source's codes, the other source's codes (both directions, alternating)."""
    levels = _source_levels(ctx)
    if len(levels) < 2:
        logger.info("task %s skipped: the semantic IDs have a single source", SOURCE_RECON)
        return []
    names = list(levels)
    out = []
    for n, item_id in enumerate(cycle(ctx.train_items, count, rng)):
        src, dst = names[n % len(names)], names[(n + 1) % len(names)]
        tokens = ctx.sid_tokens(item_id)
        given = "".join(tokens[lv] for lv in levels[src])
        out.append(
            Sample(SOURCE_RECON, header=f"An item's {src} codes are {given}.",
                   footer=f"Its {dst} codes:", answer_tokens=tuple(tokens[lv] for lv in levels[dst]),
                   answer_item=item_id)
        )  # fmt: skip
    return out


def build_prefix_recon(ctx: TaskContext, count: int, rng: random.Random) -> list[Sample]:
    """Title + the first k codes -> the remaining codes (k uniform in 1..levels-1)."""
    num_levels = ctx.catalog.scheme.num_levels
    if num_levels < 2:
        return []
    out = []
    for item_id in cycle(ctx.train_items, count, rng):
        tokens = ctx.sid_tokens(item_id)
        k = rng.randint(1, num_levels - 1)
        out.append(
            Sample(PREFIX_RECON,
                   header=f"The item {ctx.catalog[item_id].title} has an ID starting with "
                          f"{''.join(tokens[:k])}.",
                   footer="The rest of its ID:", answer_tokens=tokens[k:], answer_item=item_id)
        )  # fmt: skip
    return out


def _window(ctx: TaskContext, seq: list[str], rng: random.Random, min_len: int) -> tuple[str, ...]:
    """A random window of at most ``history_len`` consecutive training items, ending anywhere."""
    end = rng.randint(min_len, len(seq))
    return tuple(seq[max(0, end - ctx.history_len) : end])


def build_masked_item(ctx: TaskContext, count: int, rng: random.Random) -> list[Sample]:
    users = [u for u, s in ctx.sequences.items() if len(_known(ctx, s)) >= 2]
    out = []
    for user in cycle(users, count, rng):
        window = _window(ctx, list(_known(ctx, ctx.sequences[user])), rng, 2)
        at = rng.randrange(len(window))
        out.append(
            Sample(MASKED_ITEM,
                   header=f"A user bought these items, oldest first; one is hidden as {MASK}.",
                   history=window, mask_at=at, footer=f"The {MASK} item:",
                   answer_tokens=ctx.sid_tokens(window[at]), answer_item=window[at], user_id=user)
        )  # fmt: skip
    return out


def _candidate_line(ctx: TaskContext, item_id: str, with_titles: bool) -> str:
    item = ctx.catalog[item_id]
    sid = "".join(ctx.sid_tokens(item_id))
    return f"{sid} {item.title}" if with_titles else sid


def _examples_with_history(ctx: TaskContext) -> list[Example]:
    return [e for e in ctx.train_examples if ctx.known(e.target) and any(ctx.known(i) for i in e.history)]


def build_bpr(ctx: TaskContext, count: int, rng: random.Random, *, with_titles: bool = True) -> list[Sample]:
    out = []
    for e in cycle(_examples_with_history(ctx), count, rng):
        negative = ctx.negative(e.user_id, rng)
        pair = [e.target, negative]
        rng.shuffle(pair)
        lines = "\n".join(
            f"{label}. {_candidate_line(ctx, i, with_titles)}" for label, i in zip("AB", pair, strict=True)
        )
        out.append(
            Sample(BPR, header="A user bought these items, oldest first.", history=e.history,
                   footer=f"Which of these two items does the user prefer next?\n{lines}\nPreferred item:",
                   answer_tokens=ctx.sid_tokens(e.target), answer_item=e.target, user_id=e.user_id,
                   extra_items=tuple(pair))
        )  # fmt: skip
    return out


def build_negative(
    ctx: TaskContext, count: int, rng: random.Random, *, with_titles: bool = True
) -> list[Sample]:
    out = []
    for e in cycle(_examples_with_history(ctx), count, rng):
        positive = rng.random() < 0.5
        candidate = e.target if positive else ctx.negative(e.user_id, rng)
        out.append(
            Sample(NEGATIVE, header="A user bought these items, oldest first.", history=e.history,
                   footer=f"Should we recommend {_candidate_line(ctx, candidate, with_titles)} next? "
                          "Answer yes or no:",
                   answer_text=YES if positive else NO, answer_item=e.target if positive else None,
                   user_id=e.user_id, extra_items=(candidate,))
        )  # fmt: skip
    return out


Builder = Callable[[TaskContext, int, random.Random], list[Sample]]


def builders(with_titles: bool) -> dict[str, Builder]:
    return {
        NEXT_ITEM: build_next_item,
        SID_TO_TITLE: build_sid_to_title,
        TITLE_TO_SID: build_title_to_sid,
        SOURCE_RECON: build_source_recon,
        PREFIX_RECON: build_prefix_recon,
        MASKED_ITEM: build_masked_item,
        BPR: lambda c, n, r: build_bpr(c, n, r, with_titles=with_titles),
        NEGATIVE: lambda c, n, r: build_negative(c, n, r, with_titles=with_titles),
    }


def task_rng(seed: int, task: str) -> random.Random:
    return random.Random(f"{seed}:{task}")


def build_mixture(
    ctx: TaskContext, mixture: TaskMixture, seed: int, *, with_titles: bool = True
) -> dict[str, list[Sample]]:
    """Every active task's samples, ``round(weight * N)`` each (N = next-item examples)."""
    base = sum(1 for e in ctx.train_examples if ctx.known(e.target))
    table = builders(with_titles)
    out: dict[str, list[Sample]] = {}
    for task in mixture.active():
        count = round(mixture.spec(task).weight * base)
        out[task] = table[task](ctx, count, task_rng(seed, task))
    logger.info("task mixture: %s", {t: len(s) for t, s in out.items()})
    return out
