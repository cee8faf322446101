"""The configs committed under benchmarks/configs load as what their names say, so a renamed or
removed field breaks here and not at the start of a GPU run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.tokenizer_config import ItemTokenizerConfig
from training.train_config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[3] / "benchmarks" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("tokenizer_*.json")), ids=lambda p: p.name)
def test_tokenizer_configs_load(path: Path) -> None:
    ItemTokenizerConfig(**json.loads(path.read_text()))


def test_the_beauty_training_config_loads_with_its_task_mixture() -> None:
    config = TrainConfig.model_validate(json.loads((CONFIGS / "train_beauty.json").read_text()))
    enabled = {name for name, spec in config.tasks if spec.enabled}
    assert enabled == {
        "next_item",
        "sid_to_title",
        "title_to_sid",
        "source_recon",
        "prefix_recon",
        "masked_item",
        "bpr",
    }
    assert config.anneal and config.val_every > 0


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("train_*.json")), ids=lambda p: p.name)
def test_training_configs_load(path: Path) -> None:
    TrainConfig.model_validate(json.loads(path.read_text()))


def test_the_cpu_and_gpu_recipes_differ_only_in_device_and_budget() -> None:
    """The GPU runner trains the filed CPU recipe; only where and how long may differ."""
    cpu = json.loads((CONFIGS / "train_beauty_cpu.json").read_text())
    gpu = json.loads((CONFIGS / "train_beauty_gpu.json").read_text())
    budget = {"device", "epochs", "val_metric", "val_batch", "patience", "checkpoint_every"}
    differing = {k for k in cpu.keys() | gpu.keys() if cpu.get(k) != gpu.get(k)}
    assert differing <= budget, differing - budget
    assert cpu["scratch_sid_init"] == "codebook" and cpu["loss_vocab"] == "level"
