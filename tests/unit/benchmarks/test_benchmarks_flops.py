"""The arithmetic-limit count of benchmarks/decode_speed.py, checked against torch's own FLOP
counter on a real (tiny, random) Llama forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.flops import ModelShape, matmul_gflops, search_flops

SHAPE = dict(hidden=64, layers=2, intermediate=160, heads=4, kv_heads=2, vocab=97)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=SHAPE["hidden"],
        num_hidden_layers=SHAPE["layers"],
        intermediate_size=SHAPE["intermediate"],
        num_attention_heads=SHAPE["heads"],
        num_key_value_heads=SHAPE["kv_heads"],
        vocab_size=SHAPE["vocab"],
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("llama")
    model.save_pretrained(path)
    return model, path


def test_the_shape_is_read_from_the_checkpoint(llama: tuple[torch.nn.Module, Path]) -> None:
    shape = ModelShape.of_checkpoint(llama[1])
    assert shape == ModelShape(head_dim=16, **SHAPE)


def counted(model: torch.nn.Module, ids: torch.Tensor, **kwargs: object) -> tuple[float, object]:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(input_ids=ids, **kwargs)
    return float(counter.get_total_flops()), out


def test_prefill_then_one_decode_step_match_torchs_count(llama: tuple[torch.nn.Module, Path]) -> None:
    model, path = llama
    shape = ModelShape.of_checkpoint(path)
    prompt = 11
    ids = torch.randint(0, SHAPE["vocab"], (1, prompt))
    prefill, out = counted(model, ids, use_cache=True, logits_to_keep=1)
    # Eager attention multiplies the full square of scores, which torch counts; ours counts the
    # causal half (all a causal model needs): the rest must agree exactly.
    expected = search_flops(shape, [prompt], {})
    square_attention = 2 * shape.layers * 2 * shape.heads * shape.head_dim * prompt * prompt
    causal_attention = sum(
        2 * shape.layers * 2 * shape.heads * shape.head_dim * (p + 1) for p in range(prompt)
    )
    assert prefill == pytest.approx(expected - causal_attention + square_attention, rel=1e-9)
    # one beam's decode step after the prompt: one token attending to prompt + itself
    step, _ = counted(model, ids[:, :1], past_key_values=out.past_key_values, use_cache=True)  # type: ignore[attr-defined]
    assert step == pytest.approx(search_flops(shape, [], {prompt: 1}), rel=1e-9)


def test_rows_add_up_per_context() -> None:
    shape = ModelShape(hidden=8, layers=1, intermediate=8, heads=2, kv_heads=2, head_dim=4, vocab=10)
    one = search_flops(shape, [], {5: 1})
    assert search_flops(shape, [], {5: 3}) == pytest.approx(3 * one)
    assert search_flops(shape, [], {6: 1}) > one  # a longer context costs more attention
    assert search_flops(shape, [3, 4], {}) == pytest.approx(
        search_flops(shape, [3], {}) + search_flops(shape, [4], {})
    )


def test_matmul_rate_is_positive_in_fp32() -> None:
    assert matmul_gflops("float32", size=128, repeats=2) > 0
