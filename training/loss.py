"""The training loss: next-token cross-entropy on the labelled positions only, optionally with
the softmax restricted to the semantic-ID tokens (all the constrained search ever scores), to the
tokens of the label's own ID level, or further to the trie's valid children of each ID token's
prefix (``training.trie_loss``: exactly the served score)."""

from __future__ import annotations

import torch

from training.encoding import IGNORE
from training.trie_loss import TrieTargets


def _backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack and LM head of a causal LM, peft-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
    return inner.get_decoder(), inner.get_output_embeddings()  # type: ignore[operator]


def token_loss(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    vocab_ids: torch.Tensor | None = None,
    trie: TrieTargets | None = None,
    also_plain: bool = False,
    embedding_dropout: float = 0.0,
    level_sizes: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over every labelled position of a :func:`collate_left` batch
    (:func:`token_loss_sum` divided by its count of labelled positions)."""
    total, count = token_loss_sum(
        model, inputs, vocab_ids=vocab_ids, trie=trie, also_plain=also_plain,
        embedding_dropout=embedding_dropout, level_sizes=level_sizes,
    )  # fmt: skip
    return total / max(count, 1)


def token_loss_sum(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    vocab_ids: torch.Tensor | None = None,
    trie: TrieTargets | None = None,
    also_plain: bool = False,
    embedding_dropout: float = 0.0,
    level_sizes: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the labelled positions, and how many there are.

    The sum, not the mean, is what data-parallel training needs: each process's slice of a
    global batch is divided by the labelled positions of the whole batch
    (``training.data_parallel``).

    Only the labelled positions go through the LM head (a packed sequence labels ~4/5 of its
    tokens, a prompt example only its answer). With ``vocab_ids`` the softmax runs over those
    tokens only for labels that are one of them (the semantic-ID tokens: all the constrained
    search ever scores); other labels (EOS, text answers) keep the full vocabulary. With
    ``trie`` (whose ``ids`` are then the ID tokens) an ID label's softmax runs over the valid
    children of the trie node its prefix spells, so an item's loss is minus its served score;
    ``also_plain`` adds the plain ID-token softmax's loss to it (both terms on every ID label).
    With ``level_sizes`` (the scheme's codebook sizes; ``vocab_ids`` then lists the ID tokens
    level by level, as ``add_sid_tokens`` returns them) an ID label's softmax runs over its own
    level's tokens only: the same choice the search makes at that level before the trie mask,
    and far cheaper than the whole ID vocabulary when one level holds a token per item.
    ``embedding_dropout`` drops input-embedding units while training (Llama has no dropout of
    its own besides attention).
    """
    backbone, head = _backbone_and_head(model)
    embeds = backbone.embed_tokens(inputs["input_ids"])  # type: ignore[operator]
    if embedding_dropout and model.training:
        embeds = torch.nn.functional.dropout(embeds, embedding_dropout, training=True)
    hidden = backbone(
        inputs_embeds=embeds,
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
    ).last_hidden_state
    labels = inputs["labels"][:, 1:]
    where = labels != IGNORE
    states = hidden[:, :-1][where]
    targets = labels[where]
    if targets.numel() == 0:
        raise ValueError("a training batch has no labelled position")
    if trie is not None:
        vocab_ids = trie.ids
    count = int(targets.numel())
    if vocab_ids is None:
        return torch.nn.functional.cross_entropy(head(states).float(), targets, reduction="sum"), count
    size = max(int(targets.max()), int(vocab_ids.max())) + 1
    lookup = torch.full((size,), -1, dtype=torch.long, device=targets.device)
    lookup[vocab_ids] = torch.arange(len(vocab_ids), device=targets.device)
    sid_targets = lookup[targets]
    is_sid = sid_targets >= 0
    total = torch.zeros((), device=states.device)
    if bool(is_sid.any()) and level_sizes is not None:
        total = total + _level_loss_sum(head, states[is_sid], sid_targets[is_sid], vocab_ids, level_sizes)
    elif bool(is_sid.any()):
        logits = _id_logits(head, states[is_sid], vocab_ids).float()
        sid_labels = sid_targets[is_sid]
        if trie is not None:
            masked = logits.clone() if also_plain else logits
            after = trie.nodes_after(inputs["input_ids"])[:, :-1][where][is_sid]
            trie.mask_logits_(masked, trie.prefix_nodes(after, sid_labels))
            total = total + torch.nn.functional.cross_entropy(masked, sid_labels, reduction="sum")
        if trie is None or also_plain:
            total = total + torch.nn.functional.cross_entropy(logits, sid_labels, reduction="sum")
    if not bool(is_sid.all()):  # text answers and EOS keep the full vocabulary
        rest = ~is_sid
        total = total + torch.nn.functional.cross_entropy(
            head(states[rest]).float(), targets[rest], reduction="sum"
        )
    return total, count


def _id_logits(head: torch.nn.Module, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The LM head's logits of ``states`` for the token ids ``ids`` only."""
    weight = getattr(head, "weight", None)
    if isinstance(head, torch.nn.Linear) and head.bias is None and weight is not None:
        return torch.nn.functional.linear(states, weight[ids])
    return head(states)[:, ids]  # a wrapped head (peft's trainable tokens): full logits, then the columns


def _level_loss_sum(
    head: torch.nn.Module,
    states: torch.Tensor,
    sid_labels: torch.Tensor,
    vocab_ids: torch.Tensor,
    level_sizes: tuple[int, ...],
) -> torch.Tensor:
    """Summed cross-entropy of ID labels (indices into ``vocab_ids``), each over its own level."""
    if sum(level_sizes) != len(vocab_ids):
        raise ValueError(f"level sizes {level_sizes} do not add up to {len(vocab_ids)} ID tokens")
    total = torch.zeros((), device=states.device)
    start = 0
    for size in level_sizes:
        here = (sid_labels >= start) & (sid_labels < start + size)
        if bool(here.any()):
            logits = _id_logits(head, states[here], vocab_ids[start : start + size]).float()
            labels = sid_labels[here] - start
            total = total + torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        start += size
    return total
