"""LoRA fine-tuning: example encoding and batching, then a real short run of the tiny model.

The run (``slow``, ~5 s on one CPU thread) trains on a small synthetic dataset, and the tests check
what later stages rely on: the loss went down, ``merged/`` is a plain HF checkpoint that knows the
semantic-ID tokens and keeps what was learned, and the run directory exports to a bundle.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fake_embeddings import fake_embed_16
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from word_tokenizer import WordTokenizer

from model.bundle import load_bundle
from model.catalog import Catalog, CatalogItem
from model.prompts import ANSWER_CUE, encode_prompt, next_item_prompt, training_windows
from model.semantic_id import SidScheme
from training.base_model import add_sid_tokens, sid_token_ids
from training.batches import collate, length_bucketed_batches
from training.checkpoint import CHECKPOINT_DIR, LAST_CHECKPOINT
from training.data import Example, InteractionData, leave_one_out, load_lcrec
from training.devices import pick_device
from training.encoding import IGNORE, Encoded, encode_example, tiny_corpus
from training.export import CURRENT, export_run
from training.finetune import MERGED_DIR, RUN_CATALOG, RUN_REPORT, RUN_TRIE, train
from training.item_tokenizer import CATALOG_FILE, TRIE_FILE, tokenize_dataset
from training.synthetic import generate_synthetic
from training.task_context import training_sequences
from training.tokenizer_config import ItemTokenizerConfig
from training.train_config import TrainConfig

# ---------------------------------------------------------------------------------------------
# Encoding and batching (fast, no model)


SCHEME = SidScheme((3, 4))
# The numbered-lines prompt, one example per target: the earlier recipe, still supported.
LINES: dict[str, str] = {"prompt_format": "lines", "objective": "prompt"}


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(SCHEME, [CatalogItem(f"i{n}", f"Item {n}", (n // 4, n % 4)) for n in range(12)])


def test_encode_example_puts_loss_on_the_answer_only(catalog: Catalog) -> None:
    tokenizer = WordTokenizer()
    config = TrainConfig(**LINES, with_titles=True, prompt_align=1)
    encoded = encode_example(Example("u", ("i1", "i5"), "i6"), catalog, tokenizer, config)
    assert encoded is not None
    prompt = encode_prompt(tokenizer, next_item_prompt([catalog["i1"], catalog["i5"]], SCHEME))
    answer = [*tokenizer.convert_tokens_to_ids(["<a_1>", "<b_2>"]), tokenizer.eos_token_id]
    assert encoded.input_ids == prompt + answer
    assert encoded.labels == [IGNORE] * len(prompt) + answer


@pytest.mark.parametrize("align", [4, 8, 32])
def test_encode_example_left_pads_the_prompt_to_the_alignment(catalog: Catalog, align: int) -> None:
    tokenizer = WordTokenizer()
    config = TrainConfig(**LINES, with_titles=True, prompt_align=align)
    encoded = encode_example(Example("u", ("i1", "i5"), "i6"), catalog, tokenizer, config)
    assert encoded is not None
    plain = encode_prompt(tokenizer, next_item_prompt([catalog["i1"], catalog["i5"]], SCHEME))
    prompt_len = encoded.labels.count(IGNORE)
    assert prompt_len % align == 0
    assert prompt_len - len(plain) < align
    assert (
        encoded.input_ids[:prompt_len] == [tokenizer.eos_token_id] * (prompt_len - len(plain)) + plain
    )  # no pad token: EOS


def test_encode_example_drops_unknown_items_and_keeps_the_recent_history(catalog: Catalog) -> None:
    tokenizer = WordTokenizer()
    config = TrainConfig(**LINES, with_titles=False, history_len=2, prompt_align=1)
    encoded = encode_example(
        Example("u", ("i0", "ghost", "i3", "i4", "gone"), "i7"), catalog, tokenizer, config
    )
    assert encoded is not None
    expected = encode_prompt(
        tokenizer, next_item_prompt([catalog["i3"], catalog["i4"]], SCHEME, with_titles=False)
    )
    assert encoded.input_ids[: len(expected)] == expected
    assert encoded.labels.count(IGNORE) == len(expected)


def test_encode_example_skips_a_target_outside_the_catalog(catalog: Catalog) -> None:
    assert (
        encode_example(Example("u", ("i1",), "ghost"), catalog, WordTokenizer(), TrainConfig(**LINES)) is None
    )


def test_encode_example_trims_the_oldest_history_to_fit_the_prompt_budget(catalog: Catalog) -> None:
    tokenizer = WordTokenizer()
    history = tuple(f"i{n}" for n in range(10))
    full = encode_example(
        Example("u", history, "i11"),
        catalog,
        tokenizer,
        TrainConfig(**LINES, with_titles=True, prompt_align=1),
    )
    assert full is not None
    full_prompt = full.labels.count(IGNORE)
    budget = full_prompt - 5  # each history line is 4 words: "n. <sid> Item n"
    trimmed = encode_example(
        Example("u", history, "i11"),
        catalog,
        tokenizer,
        TrainConfig(**LINES, with_titles=True, max_prompt_tokens=budget, prompt_align=1),
    )
    assert trimmed is not None
    prompt = trimmed.input_ids[: trimmed.labels.count(IGNORE)]
    assert len(prompt) <= budget
    # Two oldest lines dropped (one would leave it 1 over budget), the newest kept.
    kept = [catalog[f"i{n}"] for n in range(2, 10)]
    assert prompt == encode_prompt(tokenizer, next_item_prompt(kept, SCHEME))
    assert trimmed.labels[len(prompt) :] == full.labels[full_prompt:]


def test_encode_example_keeps_the_answer_when_even_no_history_fits(catalog: Catalog) -> None:
    tokenizer = WordTokenizer()
    encoded = encode_example(
        Example("u", ("i1", "i2"), "i3"),
        catalog,
        tokenizer,
        TrainConfig(**LINES, max_prompt_tokens=1, prompt_align=1),
    )
    assert encoded is not None
    prompt = encode_prompt(tokenizer, next_item_prompt([], SCHEME))
    assert encoded.input_ids[: len(prompt)] == prompt
    assert encoded.labels[len(prompt) :] == [*tokenizer.convert_tokens_to_ids(["<a_0>", "<b_3>"]), 2]


def test_collate_pads_right_and_masks_padding() -> None:
    batch = [
        Encoded([5, 6, 7], [IGNORE, 6, 7]),
        Encoded([8, 9, 10, 11, 12], [IGNORE, IGNORE, IGNORE, 11, 12]),
    ]
    out = collate(batch, pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]]
    assert out["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, IGNORE], [IGNORE, IGNORE, IGNORE, 11, 12]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert all(t.dtype == torch.long for t in out.values())


def test_length_bucketed_batches_cover_every_example_once_in_similar_lengths() -> None:
    lengths = [random.Random(n).randint(3, 40) for n in range(23)]
    data = [Encoded(list(range(n)), [IGNORE] * n) for n in lengths]
    batches = list(length_bucketed_batches(data, 5, random.Random(0)))
    assert sorted(len(b) for b in batches) == [3, 5, 5, 5, 5]
    seen = sorted(id(e) for b in batches for e in b)
    assert seen == sorted(id(e) for e in data)
    # Buckets are slices of the length-sorted order: their length ranges do not interleave.
    spans = sorted((min(len(e.input_ids) for e in b), max(len(e.input_ids) for e in b)) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in itertools.pairwise(spans))
    again = list(length_bucketed_batches(data, 5, random.Random(0)))
    assert [[id(e) for e in b] for b in again] == [[id(e) for e in b] for b in batches]


def _random_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _batch(lengths: list[tuple[int, int]]) -> list[Encoded]:
    rng = random.Random(0)
    batch = []
    for prompt_len, answer_len in lengths:
        ids = [rng.randrange(1, 64) for _ in range(prompt_len + answer_len)]
        batch.append(Encoded(ids, [IGNORE] * prompt_len + ids[prompt_len:]))
    return batch


def test_token_loss_on_left_padded_batches_equals_the_full_loss() -> None:
    from training.batches import collate_left
    from training.loss import token_loss

    model = _random_llama()
    batch = _batch([(5, 3), (9, 2), (3, 6), (7, 1)])
    inputs = collate_left(batch, pad_id=0)
    assert inputs["position_ids"][0].tolist() == [0] * 3 + list(range(8))  # 8 tokens, padded to 11
    with torch.no_grad():
        full = model(**collate(batch, pad_id=0)).loss
        packed = token_loss(model, inputs)
        # and each row alone gives the same per-token losses: padding changes nothing
        alone = [token_loss(model, collate_left([e], pad_id=0)) for e in batch]
    assert torch.allclose(full, packed, atol=1e-5), (full, packed)
    weights = torch.tensor([3.0, 2.0, 6.0, 1.0])
    assert torch.allclose((torch.stack(alone) * weights).sum() / weights.sum(), full, atol=1e-5)


def _reference_loss(
    model: torch.nn.Module, batch: list[Encoded], softmax_over: Callable[[int], slice]
) -> torch.Tensor:
    """Mean loss computed position by position on unpadded rows: each label's log-softmax over
    the token range ``softmax_over(label)`` gives."""
    total, count = torch.zeros(()), 0
    for example in batch:
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0]
        for position, label in enumerate(example.labels[1:]):
            if label == IGNORE:
                continue
            tokens = softmax_over(label)
            total += -torch.log_softmax(logits[position][tokens], 0)[label - (tokens.start or 0)]
            count += 1
    return total / count


def test_token_loss_over_the_id_vocabulary_is_the_restricted_softmax() -> None:
    from training.batches import collate_left
    from training.loss import token_loss

    model = _random_llama()
    vocab = torch.arange(40, 64)  # "ID tokens"
    rng = random.Random(1)
    batch = []
    for prompt_len, answer_len in [(4, 3), (6, 5)]:
        prompt = [rng.randrange(1, 40) for _ in range(prompt_len)]
        answer = [rng.randrange(40, 64) for _ in range(answer_len)] + [7]  # the last label: a text token
        batch.append(Encoded(prompt + answer, [IGNORE] * prompt_len + answer))
    inputs = collate_left(batch, pad_id=0)
    with torch.no_grad():
        loss = token_loss(model, inputs, vocab_ids=vocab)
        # an ID token: softmax over the ID tokens only; anything else keeps the whole vocabulary
        expected = _reference_loss(model, batch, lambda label: slice(40, 64) if label >= 40 else slice(None))
        assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)
        assert token_loss(model, inputs) > loss  # the restricted softmax spreads mass over fewer tokens


def test_token_loss_per_level_is_each_levels_own_softmax() -> None:
    from training.batches import collate_left
    from training.loss import token_loss

    model = _random_llama()
    vocab = torch.arange(40, 64)  # "ID tokens": level 0 = 40..47, level 1 = 48..63
    rng = random.Random(2)
    batch = []
    for prompt_len, items in [(4, 2), (6, 3)]:
        prompt = [rng.randrange(1, 40) for _ in range(prompt_len)]
        answer = [t for _ in range(items) for t in (rng.randrange(40, 48), rng.randrange(48, 64))] + [7]
        batch.append(Encoded(prompt + answer, [IGNORE] * prompt_len + answer))
    inputs = collate_left(batch, pad_id=0)

    def level_of(label: int) -> slice:
        return slice(48, 64) if label >= 48 else slice(40, 48) if label >= 40 else slice(None)

    with torch.no_grad():
        loss = token_loss(model, inputs, vocab_ids=vocab, level_sizes=(8, 16))
        expected = _reference_loss(model, batch, level_of)
        assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)
        assert token_loss(model, inputs, vocab_ids=vocab) > loss  # fewer tokens per softmax
        with pytest.raises(ValueError, match="do not add up"):
            token_loss(model, inputs, vocab_ids=vocab, level_sizes=(8, 8))


def test_tiny_corpus_holds_titles_and_prompts(catalog: Catalog) -> None:
    examples = [Example("u", ("i1", "ghost"), "i2"), Example("v", ("i3",), "i4")]
    texts = tiny_corpus(examples, catalog, TrainConfig(**LINES, with_titles=True))
    assert texts[:12] == [f"Item {n}" for n in range(12)]
    assert texts[12] == next_item_prompt([catalog["i1"]], SCHEME)
    assert len(texts) == 14 and texts[13].endswith(ANSWER_CUE)


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------
# A real short training run (slow)

CONFIG = TrainConfig(
    base_model="tiny", max_steps=20, batch_size=16, lr=3e-3, with_titles=False, history_len=8, device="cpu"
)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread while training: this model is too small to gain from more, and on a busy
    2-core machine two threads fighting another process made the run ~15x slower (50 s vs 3 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Run:
    data: InteractionData
    tok_dir: Path
    out: Path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[InteractionData, Path]:
    root = tmp_path_factory.mktemp("finetune")
    data = load_lcrec(generate_synthetic(root / "data", num_users=40, num_items=30, num_categories=4))
    tokenize_dataset(data, ItemTokenizerConfig(levels=2, codebook_size=4), root / "tok", embed=fake_embed_16)
    return data, root / "tok"


@pytest.fixture(scope="module")
def run(prepared: tuple[InteractionData, Path]) -> Run:
    data, tok_dir = prepared
    out = tok_dir.parent / "run"
    with single_thread():
        merged = train(data, tok_dir, out, CONFIG)
    assert merged == out / MERGED_DIR
    return Run(data, tok_dir, out)


def _load(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(path))


def _sequence_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run: Run) -> float:
    """The training loss (whole sequences, softmax over the ID tokens) on the first 32 users."""
    from training.batches import collate_left
    from training.encoding import encode_sequences
    from training.loss import token_loss

    catalog = Catalog.load(run.out / RUN_CATALOG)
    sequences = list(training_sequences(run.data).values())[:32]
    encoded = encode_sequences(sequences, catalog, tokenizer, CONFIG)
    sid_ids = torch.tensor([i for level in sid_token_ids(tokenizer, catalog.scheme) for i in level])
    with torch.no_grad():
        return float(token_loss(model, collate_left(encoded, tokenizer.pad_token_id), vocab_ids=sid_ids))


@pytest.mark.slow
def test_train_report(run: Run) -> None:
    report = json.loads((run.out / RUN_REPORT).read_text())
    assert report["dataset"] == "Synthetic"
    assert report["steps"] == CONFIG.max_steps
    # whole sequences: one example per training window of every user
    windows = [
        w for s in training_sequences(run.data).values() for w in training_windows(s, CONFIG.history_len)
    ]
    assert report["examples"] == len(windows)
    assert report["task_examples"] == {"sequence": len(windows)}
    assert report["config"] == CONFIG.model_dump()
    assert report["tokens"] > 0
    assert math.isfinite(report["final_loss_ema"])


@pytest.mark.slow
def test_loss_goes_down_and_the_merged_model_keeps_it(run: Run) -> None:
    # The untrained start: the tiny base the run built, with the SID tokens added the same way.
    base, base_tokenizer = _load(run.out / "base")
    add_sid_tokens(base, base_tokenizer, Catalog.load(run.out / RUN_CATALOG).scheme)
    merged, merged_tokenizer = _load(run.out / MERGED_DIR)
    assert merged_tokenizer.get_vocab() == base_tokenizer.get_vocab()

    before = _sequence_loss(base, base_tokenizer, run)
    after = _sequence_loss(merged, merged_tokenizer, run)
    ema = json.loads((run.out / RUN_REPORT).read_text())["final_loss_ema"]
    assert after < 0.9 * before, (before, after)
    # The EMA lags the falling loss; the merged model (no dropout) is at least as good as it says.
    assert after < ema < before, (before, ema, after)


@pytest.mark.slow
def test_merged_checkpoint_loads_with_the_semantic_id_tokens(run: Run) -> None:
    model, tokenizer = _load(run.out / MERGED_DIR)
    scheme = Catalog.load(run.out / RUN_CATALOG).scheme
    vocab = tokenizer.get_vocab()
    tokens = scheme.all_tokens()
    assert all(token in vocab for token in tokens)
    assert len({vocab[t] for t in tokens}) == len(tokens)
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(tokenizer) == model.config.vocab_size
    assert torch.equal(model.get_output_embeddings().weight, embeddings)  # still tied after the merge
    # No LoRA leftovers: a plain Llama checkpoint that vLLM can serve.
    assert not any("lora" in name for name, _ in model.named_parameters())
    sid = next(iter(Catalog.load(run.out / RUN_CATALOG))).sid
    ids = tokenizer(scheme.format(sid), add_special_tokens=False)["input_ids"]
    assert ids == [vocab[t] for t in scheme.tokens(sid)]


@pytest.mark.slow
def test_run_dir_holds_the_tokenizer_catalog_and_trie(run: Run) -> None:
    assert (run.out / RUN_CATALOG).read_bytes() == (run.tok_dir / CATALOG_FILE).read_bytes()
    assert (run.out / RUN_TRIE).read_bytes() == (run.tok_dir / TRIE_FILE).read_bytes()


@pytest.mark.slow
def test_the_run_exports_to_a_loadable_bundle(run: Run, tmp_path: Path) -> None:
    bundle = export_run(run.out, tmp_path / "artifacts", "ft1")
    loaded = load_bundle(tmp_path / "artifacts" / CURRENT)
    assert loaded.version == bundle.version == "ft1"
    assert loaded.manifest.base_model == "tiny"
    assert loaded.manifest.extra["history_len"] == CONFIG.history_len
    assert loaded.manifest.extra["with_titles"] is False
    assert loaded.manifest.extra["training"]["steps"] == CONFIG.max_steps
    assert len(loaded.catalog) == len(run.data.items)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_grad_accum_larger_than_an_epoch_still_steps(
    prepared: tuple[InteractionData, Path], tmp_path: Path
) -> None:
    """Regression: with fewer batches per epoch than grad_accum the loop never stepped (and hung)."""
    data, tok_dir = prepared
    config = TrainConfig(
        **LINES,
        base_model="tiny", max_steps=2, max_train_examples=10, batch_size=16, grad_accum=2,
        with_titles=False, history_len=8, device="cpu",
    )  # fmt: skip
    with single_thread():
        train(data, tok_dir, tmp_path / "run", config)
    report = json.loads((tmp_path / "run" / RUN_REPORT).read_text())
    assert report["steps"] == 2
    assert report["examples"] == 10
    # One batch of all 10 examples per epoch; 2 steps x 2 micro-batches = 4 passes over them.
    _, tokenizer = _load(tmp_path / "run" / MERGED_DIR)
    catalog = Catalog.load(tok_dir / CATALOG_FILE)
    sampled = random.Random(config.seed).sample(leave_one_out(data, max_history=8).train, 10)
    encoded = [encode_example(x, catalog, tokenizer, config) for x in sampled]
    assert report["tokens"] == 4 * sum(len(e.input_ids) for e in encoded if e is not None)


# ---------------------------------------------------------------------------------------------
# Config validation (fast)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"lerning_rate": 1e-3}, "lerning_rate"),
        ({"tasks": {"bpr": {"enabled": True, "weight": -1}}}, "tasks.bpr.weight"),
        ({"tasks": {"bogus": {"enabled": True}}}, "tasks.bogus"),
        ({"tasks": {"next_item": {"enabled": False}}}, "at least one task"),
        ({"patience": 2}, "val_every"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"anneal_steps": 0}, "anneal_steps"),
        ({"scratch_sid_init": "codebook"}, "scratch_sid_init"),  # the default base is pretrained
    ],
)
def test_bad_config_values_name_the_field(values: dict[str, object], needle: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(values)
    assert needle in str(info.value)


def test_train_config_round_trips_through_json() -> None:
    config = TrainConfig.model_validate(
        {"tasks": {"bpr": {"enabled": True, "weight": 0.5}}, "anneal": True, "val_every": 10, "patience": 3}
    )
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config
    assert config.tasks.active() == ["next_item", "bpr"]


# ---------------------------------------------------------------------------------------------
# Task mixture, resume, annealing, validation + early stopping (slow: real tiny runs)

SHORT = TrainConfig(
    base_model="tiny", max_steps=6, batch_size=8, lr=3e-3, with_titles=False, history_len=8, device="cpu",
    max_train_examples=48, prompt_align=8, **LINES,
)  # fmt: skip


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / MERGED_DIR / "model.safetensors"))


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / RUN_REPORT).read_text())


@pytest.fixture(scope="module")
def uninterrupted(prepared: tuple[InteractionData, Path]) -> Path:
    data, tok_dir = prepared
    out = tok_dir.parent / "uninterrupted"
    with single_thread():
        train(data, tok_dir, out, SHORT.model_copy(update={"checkpoint_every": 3}))
    return out


@pytest.mark.slow
def test_resume_gives_the_same_weights_and_loss_as_an_uninterrupted_run(
    prepared: tuple[InteractionData, Path], uninterrupted: Path, tmp_path: Path
) -> None:
    from training.trainer import TrainingInterrupted

    data, tok_dir = prepared
    config = SHORT.model_copy(update={"checkpoint_every": 3})
    out = tmp_path / "run"
    with single_thread(), pytest.raises(TrainingInterrupted):
        train(data, tok_dir, out, config, interrupt_after=3)
    assert (out / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file()
    assert not (out / MERGED_DIR).exists()
    with single_thread():
        train(data, tok_dir, out, config, resume=True)
    a, b = _weights(uninterrupted), _weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = _report(uninterrupted), _report(out)
    assert rb["resumed_from_step"] == 3 and ra["resumed_from_step"] is None
    assert ra["final_loss_ema"] == rb["final_loss_ema"]
    assert ra["steps"] == rb["steps"] == 6
    assert ra["tokens"] == rb["tokens"]


@pytest.mark.slow
def test_resume_refuses_a_changed_config(prepared: tuple[InteractionData, Path], uninterrupted: Path) -> None:
    data, tok_dir = prepared
    with pytest.raises(ValueError, match="lr"):
        train(
            data,
            tok_dir,
            uninterrupted,
            SHORT.model_copy(update={"checkpoint_every": 3, "lr": 1e-4}),
            resume=True,
        )


@pytest.mark.slow
def test_annealing_stage_runs_and_changes_the_weights(
    prepared: tuple[InteractionData, Path], uninterrupted: Path, tmp_path: Path
) -> None:
    data, tok_dir = prepared
    out = tmp_path / "annealed"
    with single_thread():
        train(
            data,
            tok_dir,
            out,
            SHORT.model_copy(update={"anneal": True, "anneal_steps": 3, "anneal_lr": 1e-2}),
        )
    report = _report(out)
    assert report["steps"] == 6
    assert report["anneal"]["steps"] == 3
    assert report["final_loss_ema"] == report["anneal"]["loss_ema"]
    before, after = _weights(uninterrupted), _weights(out)  # the same stage 1 (same seed and config)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("embed_tokens" in k for k in changed)
    assert any("q_proj" in k for k in changed)
    assert not (out / "stage1_merged").exists()


@pytest.mark.slow
def test_full_finetuning_trains_the_weights_lora_leaves_alone(
    prepared: tuple[InteractionData, Path], uninterrupted: Path, tmp_path: Path
) -> None:
    data, tok_dir = prepared
    out = tmp_path / "full"
    with single_thread():
        train(data, tok_dir, out, SHORT.model_copy(update={"full_finetune": True, "checkpoint_every": 3}))
    from safetensors.torch import load_file

    start = load_file(str(out / "base" / "model.safetensors"))  # the tiny base, before any training
    lora, full = _weights(uninterrupted), _weights(out)
    norms = [k for k in start if k.endswith("layernorm.weight")]
    assert norms
    assert all(torch.equal(start[k], lora[k]) for k in norms)  # LoRA never touches the norms
    assert all(not torch.equal(start[k], full[k]) for k in norms)
    assert _report(out)["steps"] == SHORT.max_steps
    # resumable like a LoRA run: the checkpoint holds every weight
    checkpoint = torch.load(out / CHECKPOINT_DIR / LAST_CHECKPOINT, map_location="cpu", weights_only=False)
    assert any(k.endswith("layernorm.weight") for k in checkpoint["weights"])


@pytest.mark.slow
def test_task_mixture_run_reports_per_task_counts(
    prepared: tuple[InteractionData, Path], tmp_path: Path
) -> None:
    data, tok_dir = prepared
    tasks = {
        "sid_to_title": {"enabled": True, "weight": 0.5},
        "title_to_sid": {"enabled": True, "weight": 0.5},
        "prefix_recon": {"enabled": True, "weight": 0.25},
        "masked_item": {"enabled": True, "weight": 0.5},
        "bpr": {"enabled": True, "weight": 0.5},
        "negative": {"enabled": True, "weight": 0.25},
    }
    config = TrainConfig.model_validate({**SHORT.model_dump(), "max_steps": 3, "tasks": tasks})
    with single_thread():
        train(data, tok_dir, tmp_path / "run", config)
    report = _report(tmp_path / "run")
    assert report["task_examples"] == {
        "next_item": 48, "sid_to_title": 24, "title_to_sid": 24, "prefix_recon": 12, "masked_item": 24,
        "bpr": 24, "negative": 12,
    }  # fmt: skip
    assert report["examples"] == sum(report["task_examples"].values())
    assert report["steps"] == 3 and report["tokens_per_s"] > 0


@pytest.mark.slow
def test_validation_early_stopping_keeps_the_best_and_matches_the_engine(
    prepared: tuple[InteractionData, Path], tmp_path: Path
) -> None:
    from model.hf_engine import hf_recommender
    from training.evaluate import evaluate
    from training.validation import validation_sample

    data, tok_dir = prepared
    # A learning rate this small changes nothing: recall cannot improve, so patience 1 stops at 2.
    config = SHORT.model_copy(
        update={
            "max_steps": 50,
            "lr": 1e-9,
            "val_every": 1,
            "patience": 1,
            "val_users": 12,
            "val_k": 5,
            "val_beam": 5,
            "precision": "fp32",
        }
    )
    with single_thread():
        train(data, tok_dir, tmp_path / "run", config)
    report = _report(tmp_path / "run")
    assert report["stopped"] == "early_stop"
    assert report["steps"] == 2
    assert [p["step"] for p in report["val_curve"]] == [1, 2]
    assert report["best_step"] == 1
    assert report["best_val_recall@5"] == report["val_curve"][0]["recall@5"]
    # The merged (best) model through the HF engine on the same users gives the same recall.
    bundle = export_run(tmp_path / "run", tmp_path / "artifacts", "v1")
    examples = validation_sample(data, config)
    assert len(examples) == 12
    engine = evaluate(hf_recommender(bundle, beam_width=5), examples, split="valid", k=5)
    assert engine.metrics["recall@5"] == pytest.approx(report["val_curve"][0]["recall@5"])
    assert engine.metrics["ndcg@5"] == pytest.approx(report["val_curve"][0]["ndcg@5"], abs=1e-6)


@pytest.mark.slow
def test_resume_inside_the_annealing_stage_matches_an_uninterrupted_run(
    prepared: tuple[InteractionData, Path], tmp_path: Path
) -> None:
    from training.finetune import STAGE1_DIR
    from training.trainer import ANNEAL, TrainingInterrupted

    data, tok_dir = prepared
    config = SHORT.model_copy(
        update={"max_steps": 3, "checkpoint_every": 2, "anneal": True, "anneal_steps": 4, "anneal_lr": 1e-2}
    )
    with single_thread():
        train(data, tok_dir, tmp_path / "a", config)
        with pytest.raises(TrainingInterrupted):
            train(data, tok_dir, tmp_path / "b", config, interrupt_after=2, interrupt_stage=ANNEAL)
        assert (tmp_path / "b" / STAGE1_DIR).is_dir()
        train(data, tok_dir, tmp_path / "b", config, resume=True)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = _report(tmp_path / "a"), _report(tmp_path / "b")
    timing = {"tokens_per_s"}
    assert {k: v for k, v in ra["anneal"].items() if k not in timing} == {
        k: v for k, v in rb["anneal"].items() if k not in timing
    }
    assert ra["anneal"]["steps"] == 4
    assert ra["steps"] == rb["steps"] == 3 and ra["main_loss_ema"] == rb["main_loss_ema"]
    assert rb["resumed_from_step"] == 2
    assert not (tmp_path / "b" / STAGE1_DIR).exists()


SCRATCH_CODEBOOK = TrainConfig.model_validate(
    {
        "base_model": "scratch", "scratch": {"hidden": 64, "layers": 1, "heads": 1, "intermediate": 64},
        "scratch_sid_init": "codebook", "max_steps": 1, "lr": 1e-9, "batch_size": 8, "history_len": 8,
        "device": "cpu",
    }
)  # fmt: skip


@pytest.mark.slow
def test_scratch_codebook_init_points_the_id_embeddings_along_the_centroids(
    prepared: tuple[InteractionData, Path], tmp_path: Path
) -> None:
    from training.sid_alignment import CODEBOOKS_FILE, SidCodebooks, codebook_directions

    data, tok_dir = prepared
    with single_thread():
        train(data, tok_dir, tmp_path / "run", SCRATCH_CODEBOOK)  # lr 1e-9: the init survives
    model, tokenizer = _load(tmp_path / "run" / "merged")
    catalog = Catalog.load(tmp_path / "run" / CATALOG_FILE)
    ids = sid_token_ids(tokenizer, catalog.scheme)
    table = model.get_input_embeddings().weight.detach()
    carried = codebook_directions(SidCodebooks.load(tok_dir / CODEBOOKS_FILE), table.shape[1])
    for level, vectors in enumerate(carried):
        if vectors is None:
            continue
        centred = torch.as_tensor(vectors - vectors.mean(axis=0)).float()
        cos = torch.nn.functional.cosine_similarity(table[ids[level][: len(centred)]], centred, dim=1)
        assert float(cos.min()) > 0.999


def test_scratch_codebook_init_without_codebooks_names_the_file(
    prepared: tuple[InteractionData, Path], tmp_path: Path
) -> None:
    import shutil

    from training.sid_alignment import CODEBOOKS_FILE

    data, tok_dir = prepared
    bare = tmp_path / "tok"
    shutil.copytree(tok_dir, bare)
    (bare / CODEBOOKS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"scratch_sid_init='codebook' needs .*{CODEBOOKS_FILE}"):
        train(data, bare, tmp_path / "run", SCRATCH_CODEBOOK)
    assert not (tmp_path / "run").exists()  # failed before any work
