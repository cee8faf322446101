"""Training throughput on this CPU, every configuration side by side in one run.

What issue 13 asks to measure before choosing a recipe for a 2-core machine: bf16 autocast
against fp32, the softmax over the semantic-ID tokens (or the trie's valid children) against
the full vocabulary, LoRA
against full fine-tuning, and fewer layers, for SmolLM2-135M and the scratch Llama. Every
configuration trains on the same batches of real packed Beauty sequences (the whole-sequence
objective, compact format) through the real loss (``training.encoding.token_loss``); the
figure is tokens/s over ``--steps`` timed steps after one warm-up step.

    python benchmarks/train_speed.py --tokenizer runs/beauty_cpu/tok [--steps 3] [--smollm2-batch 16]

Writes ``benchmarks/results/train_speed.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_common import BEAUTY, RESULTS, emit  # noqa: E402
from model.catalog import Catalog  # noqa: E402
from model.cpu_features import bf16_matmul_speedup, cpu_bf16_flag, cpu_has_bf16  # noqa: E402
from model.trie import CompiledTrie  # noqa: E402
from training.adapters import stage1_model  # noqa: E402
from training.base_model import (  # noqa: E402
    add_sid_tokens,
    build_scratch_model,
    resolve_base_model,
    sid_token_ids,
)
from training.batches import collate_left  # noqa: E402
from training.data import load_lcrec  # noqa: E402
from training.encoding import encode_sequences  # noqa: E402
from training.loss import token_loss  # noqa: E402
from training.task_context import training_sequences  # noqa: E402
from training.train_config import TrainConfig  # noqa: E402
from training.trie_loss import TrieTargets  # noqa: E402


def fresh_model(
    path: Path, catalog: Catalog, *, scratch: bool, full: bool, layers: int | None
) -> tuple[Any, torch.Tensor]:
    """The base model with the ID tokens added, as stage 1 trains it (LoRA, or every weight)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if layers is not None:  # the first ``layers`` decoder blocks only
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    sid_ids = add_sid_tokens(model, tokenizer, catalog.scheme, random_init=scratch)
    config = TrainConfig(full_finetune=full or scratch)
    return stage1_model(model, config, sid_ids, bool(model.config.tie_word_embeddings)), torch.tensor(sid_ids)


def measure(
    model: Any,
    batches: list[dict[str, torch.Tensor]],
    vocab: torch.Tensor | None,
    bf16: bool,
    trie: TrieTargets | None = None,
) -> float:
    """Tokens/s of optimizer steps on ``batches`` (the first is a warm-up)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    tokens, seconds = 0, 0.0
    for index, inputs in enumerate(batches):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = token_loss(model, inputs, vocab_ids=vocab, trie=trie)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index:
            seconds += time.perf_counter() - started
            tokens += int(inputs["attention_mask"].sum())
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, required=True, help="a `genrec tokenize` output for Beauty")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--smollm2-batch", type=int, default=16)
    parser.add_argument("--scratch-batch", type=int, default=256)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "train_speed")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = load_lcrec(BEAUTY)
    catalog = Catalog.load(args.tokenizer / "catalog.json")
    trie_of = CompiledTrie.load(args.tokenizer / "trie.npz")
    sequences = list(training_sequences(data).values())
    random.Random(0).shuffle(sequences)
    bases = {
        "smollm2": (resolve_base_model("smollm2"), args.smollm2_batch),
        "scratch": (
            build_scratch_model(args.work / "scratch", hidden=256, layers=4, heads=4, intermediate=1024),
            args.scratch_batch,
        ),
    }
    rows: list[dict[str, object]] = []
    for base, (path, batch_size) in bases.items():
        probe = AutoTokenizer.from_pretrained(str(path))
        add_sid_tokens(AutoModelForCausalLM.from_pretrained(str(path)), probe, catalog.scheme)
        trie = TrieTargets.build(sid_token_ids(probe, catalog.scheme), trie_of, torch.device("cpu"))
        encoded = encode_sequences(sequences[: batch_size * (args.steps + 1)], catalog, probe, TrainConfig())
        batches = [
            collate_left(encoded[i : i + batch_size], int(probe.pad_token_id))
            for i in range(0, batch_size * (args.steps + 1), batch_size)
        ]
        variants: list[tuple[str, dict[str, Any]]] = [
            ("bf16, sid softmax", {"bf16": True, "vocab": True}),
            ("bf16, trie softmax", {"bf16": True, "vocab": True, "trie": True}),
            ("fp32, sid softmax", {"bf16": False, "vocab": True}),
            ("bf16, full softmax", {"bf16": True, "vocab": False}),
        ]
        if base == "smollm2":
            variants += [
                ("bf16, sid softmax, full fine-tuning", {"bf16": True, "vocab": True, "full": True}),
                ("bf16, sid softmax, 15 of 30 layers", {"bf16": True, "vocab": True, "layers": 15}),
            ]
        for name, spec in variants:
            model, sid_ids = fresh_model(
                path,
                catalog,
                scratch=base == "scratch",
                full=spec.get("full", False),
                layers=spec.get("layers"),
            )
            trie_spec = trie if spec.get("trie") else None
            rate = measure(model, batches, sid_ids if spec["vocab"] else None, spec["bf16"], trie_spec)
            lora = base != "scratch" and not spec.get("full")
            row = {
                "base": base,
                "variant": name,
                "lora": lora,
                "batch": batch_size,
                "tokens_per_s": round(rate, 1),
            }
            rows.append(row)
            print(rows[-1], flush=True)
            del model
    emit(
        {
            "cpu_bf16_flag": cpu_bf16_flag(),
            "bf16_matmul_speedup": round(bf16_matmul_speedup(), 2),
            "auto_precision": "bf16" if cpu_has_bf16() else "fp32",
            "threads": torch.get_num_threads(),
            "steps": args.steps,
            "rows": rows,
            "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
