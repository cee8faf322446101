"""The whole-sequence training contract: one packed causal pass scores every item of a history
exactly as the serving engine scores it for that item's served prompt.

For every position ``t`` of a packed sequence, the trie-renormalised log-probability of item
``t``'s ID read off the packed pass must equal what the constrained engine's ``rank`` gives
item ``t`` for the served prompt of ``s[:t]`` (the same score its top-K search assigns).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from model.bundle import CATALOG, MODEL_DIR, TRIE, ArtifactBundle, load_bundle, write_manifest
from model.catalog import Catalog, CatalogItem
from model.hf_engine import hf_recommender
from model.prompts import COMPACT, IGNORE_INDEX, CompactFormat, training_windows
from model.recommender import RankRequest
from model.semantic_id import SidScheme
from model.trie import ROOT, CompiledTrie
from model.trie_mask import sid_token_table
from training.base_model import add_sid_tokens, build_scratch_model, build_tiny_model, sid_token_ids
from training.batches import collate_left
from training.encoding import Encoded
from training.loss import token_loss
from training.trie_loss import TrieTargets

pytestmark = pytest.mark.slow

SCHEME = SidScheme((3, 3, 2))
SEQUENCE = ["i4", "i0", "i9", "i13", "i2", "i7", "i16"]


def make_catalog(sparse: bool = False) -> Catalog:
    """Every ID of the scheme; ``sparse`` drops some, so that nodes differ in their children
    (some have one child) and a code's validity depends on its prefix."""
    sids = list(itertools.product(*(range(s) for s in SCHEME.codebook_sizes)))
    if sparse:
        sids = [sid for n, sid in enumerate(sids) if n % 3 != 1 and sid[:2] != (2, 0)]
    items = [CatalogItem(f"i{i}", f"Item number {i}", tuple(sid)) for i, sid in enumerate(sids)]
    return Catalog(SCHEME, items)


def build_bundle(root: Path, base: str, *, sparse: bool = False) -> ArtifactBundle:
    catalog = make_catalog(sparse)
    if base == "scratch":
        base_dir = build_scratch_model(
            root.parent / f"{root.name}-base", hidden=64, layers=2, heads=1, intermediate=128
        )
        with_titles = False
    else:
        corpus = [item.title for item in catalog] * 3
        base_dir = build_tiny_model(root.parent / f"{root.name}-base", corpus, vocab_size=300)
        with_titles = True
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    sid_ids = add_sid_tokens(model, tokenizer, catalog.scheme, random_init=True)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # spread the ID rows so items get clearly different scores
        weight = model.get_input_embeddings().weight
        weight[sid_ids] += torch.randn(len(sid_ids), weight.shape[1], generator=generator)
    model.save_pretrained(root / MODEL_DIR, safe_serialization=True)
    tokenizer.save_pretrained(root / MODEL_DIR)
    catalog.save(root / CATALOG)
    CompiledTrie.build([item.sid for item in catalog]).save(root / TRIE)
    write_manifest(
        root, version=f"contract-{base}", base_model=base, catalog=catalog,
        with_titles=with_titles, prompt_format=COMPACT, prompt_align=1,
    )  # fmt: skip
    return load_bundle(root)


def packed_scores(bundle: ArtifactBundle, items: list[str]) -> list[float]:
    """Trie-renormalised log-probability of each item's ID (from the second on), one causal pass."""
    tokenizer = AutoTokenizer.from_pretrained(str(bundle.model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(bundle.model_dir), dtype=torch.float32).eval()
    catalog, trie = bundle.catalog, bundle.trie
    with_titles = bool(bundle.manifest.extra["with_titles"])
    fmt = CompactFormat(tokenizer, catalog.scheme, with_titles=with_titles)
    ids, labels = fmt.packed_sequence([catalog[i] for i in items])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    token_of = sid_token_table(bundle.model_dir, catalog.scheme)
    labelled = [p for p in range(1, len(ids)) if labels[p] != IGNORE_INDEX]
    assert len(labelled) == catalog.scheme.num_levels * (len(items) - 1)
    scores = []
    for t, item_id in enumerate(items[1:]):
        positions = labelled[t * catalog.scheme.num_levels : (t + 1) * catalog.scheme.num_levels]
        node, total = ROOT, 0.0
        for level, (position, code) in enumerate(zip(positions, catalog[item_id].sid, strict=True)):
            assert ids[position] == token_of[level][code]  # the label is item t's own ID token
            allowed = trie.allowed(node)
            row = logits[position - 1]  # the position predicting this token
            valid = row[[token_of[level][c] for c in allowed]]
            total += row[token_of[level][code]] - (valid.max() + np.log(np.exp(valid - valid.max()).sum()))
            node = trie.child(node, code)
        scores.append(total)
    return scores


@pytest.mark.parametrize("base", ["scratch", "tiny"])
def test_packed_pass_scores_equal_the_served_scores(tmp_path: Path, base: str) -> None:
    bundle = build_bundle(tmp_path / "bundle", base)
    recommender = hf_recommender(bundle, beam_width=len(bundle.catalog), max_batch=4)
    requests: list[RankRequest] = [(SEQUENCE[:t], [SEQUENCE[t]]) for t in range(1, len(SEQUENCE))]
    served = [row[0].score for row in recommender.rank(requests)]
    packed = packed_scores(bundle, SEQUENCE)
    np.testing.assert_allclose(packed, served, rtol=0, atol=1e-4)
    # and the top-K search gives each true item that same score wherever it ranks it
    top = recommender.recommend([SEQUENCE[:t] for t in range(1, len(SEQUENCE))], len(bundle.catalog))
    for t, row in enumerate(top, start=1):
        found = {hit.item_id: hit.score for hit in row}
        assert found[SEQUENCE[t]] == pytest.approx(packed[t - 1], abs=1e-4)


def test_served_prompt_is_a_prefix_of_the_packed_sequence(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "bundle", "tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(bundle.model_dir))
    catalog = bundle.catalog
    fmt = CompactFormat(tokenizer, catalog.scheme, with_titles=True)
    ids, _ = fmt.packed_sequence([catalog[i] for i in SEQUENCE])
    recommender = hf_recommender(bundle, beam_width=4, max_batch=4)
    for t in range(len(SEQUENCE) + 1):
        prompt = recommender.prompts.encode(SEQUENCE[:t])
        assert ids[: len(prompt)] == prompt
        if t < len(SEQUENCE):
            assert ids[len(prompt) : len(prompt) + 3] == fmt.sid_ids(catalog[SEQUENCE[t]])


def test_training_windows_make_every_item_a_target_once() -> None:
    sequence = [f"i{n}" for n in range(47)]
    windows = training_windows(sequence, history_len=20)
    assert [len(w) for w in windows] == [21, 21, 7]
    assert windows[1][0] == windows[0][-1] and windows[2][0] == windows[1][-1]
    targets = [item for window in windows for item in window[1:]]
    assert targets == sequence[1:]
    assert training_windows(["a"], 20) == [] and training_windows(["a", "b"], 20) == [["a", "b"]]
    with pytest.raises(ValueError, match="history_len"):
        training_windows(sequence, 0)


@pytest.mark.parametrize("base", ["scratch", "tiny"])
def test_trie_loss_is_minus_the_served_score(tmp_path: Path, base: str) -> None:
    """``loss_vocab='trie'``: the loss of a packed sequence is minus the mean served score of its
    items (per ID token), on a sparse trie where the plain ID-token softmax differs."""
    bundle = build_bundle(tmp_path / "bundle", base, sparse=True)
    catalog = bundle.catalog
    sequence = [item.item_id for item in catalog][::2][:6]
    recommender = hf_recommender(bundle, beam_width=len(catalog), max_batch=4)
    served = [row[0].score for row in recommender.rank([(sequence[:t], [sequence[t]]) for t in range(1, 6)])]
    tokenizer = AutoTokenizer.from_pretrained(str(bundle.model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(bundle.model_dir), dtype=torch.float32).eval()
    fmt = CompactFormat(tokenizer, catalog.scheme, with_titles=bool(bundle.manifest.extra["with_titles"]))
    ids, labels = fmt.packed_sequence([catalog[i] for i in sequence])
    # an ID-answer example rides in the same batch: its EOS keeps the whole vocabulary
    answer = [*fmt.sid_ids(catalog[sequence[0]]), tokenizer.eos_token_id]
    batch = [
        Encoded(ids, labels),
        Encoded(fmt.header() + answer, [IGNORE_INDEX] * len(fmt.header()) + answer),
    ]
    targets = TrieTargets.build(sid_token_ids(tokenizer, catalog.scheme), bundle.trie, torch.device("cpu"))
    with torch.no_grad():
        packed = token_loss(model, collate_left(batch[:1], tokenizer.pad_token_id), trie=targets)
        plain = token_loss(model, collate_left(batch[:1], tokenizer.pad_token_id), vocab_ids=targets.ids)
        both = token_loss(model, collate_left(batch, tokenizer.pad_token_id), trie=targets)
        answer_alone = token_loss(model, collate_left(batch[1:], tokenizer.pad_token_id), trie=targets)
        summed = token_loss(
            model, collate_left(batch[:1], tokenizer.pad_token_id), trie=targets, also_plain=True
        )
        eos_row = model(input_ids=torch.tensor([batch[1].input_ids])).logits[0, -2]
        eos_loss = -torch.log_softmax(eos_row, 0)[tokenizer.eos_token_id]
    count = catalog.scheme.num_levels * (len(sequence) - 1)
    assert float(packed) == pytest.approx(-sum(served) / count, abs=1e-5)
    assert float(plain) > float(packed) + 0.05  # the trie's renormalisation is not a no-op here
    assert float(summed) == pytest.approx(float(plain) + float(packed), abs=1e-5)  # sid+trie
    mixed = (float(packed) * count + float(answer_alone) * len(answer)) / (count + len(answer))
    assert float(both) == pytest.approx(mixed, abs=1e-5)  # rows do not leak into each other
    id_part = float(answer_alone) * len(answer) - float(eos_loss)
    assert id_part == pytest.approx(-recommender.rank([([], [sequence[0]])])[0][0].score, abs=1e-4)
