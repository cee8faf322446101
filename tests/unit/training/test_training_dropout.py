"""Dropout hooks: active while training, a no-op in eval, nothing left in the saved model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.dropout import add_dropout


def _llama(layers: int = 2) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, attn_implementation="eager",
    )  # fmt: skip
    return LlamaForCausalLM(config)


IDS = torch.arange(1, 17).reshape(2, 8)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    return model(input_ids=IDS).logits


@pytest.mark.parametrize(("hidden", "attention"), [(0.3, 0.0), (0.0, 0.3), (0.3, 0.3)])
def test_dropout_changes_training_passes_only(hidden: float, attention: float) -> None:
    model = _llama()
    reference_eval = _logits(model.eval()).detach()
    reference_train = _logits(model.train()).detach()  # no dropout yet: train == eval
    torch.testing.assert_close(reference_train, reference_eval)
    handles = add_dropout(model, hidden=hidden, attention=attention)
    assert len(handles) == (4 if hidden else 0)  # attention + MLP of 2 layers
    torch.manual_seed(1)
    first = _logits(model.train()).detach()
    second = _logits(model).detach()
    assert not torch.allclose(first, reference_eval)
    assert not torch.allclose(first, second)  # a fresh mask every pass
    torch.testing.assert_close(_logits(model.eval()).detach(), reference_eval)


def test_hidden_dropout_scales_block_outputs_like_a_dropout_layer() -> None:
    model = _llama(layers=1).train()
    add_dropout(model, hidden=0.5, attention=0.0)
    mlp = model.model.layers[0].mlp
    x = torch.randn(4, 8, 32)
    plain = torch.nn.Module.__call__  # hooks run through __call__; forward() skips them
    torch.manual_seed(0)
    dropped = plain(mlp, x)
    kept = mlp.forward(x)
    zero = dropped == 0
    assert 0.3 < zero.float().mean() < 0.7
    torch.testing.assert_close(dropped[~zero], 2 * kept[~zero])


def test_dropout_leaves_the_saved_model_plain(tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    model = _llama()
    add_dropout(model, hidden=0.2, attention=0.1)
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.attention_dropout == 0.0
    assert not loaded.model.layers[0].mlp._forward_hooks
    torch.testing.assert_close(_logits(loaded.eval()), _logits(model.eval()))
