"""`genrec train --config FILE.json` with option overrides, `--task`, `--resume`: through the real app."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_output import mentions, run_genrec

from training.data import load_lcrec
from training.finetune import RUN_REPORT
from training.item_tokenizer import ItemTokenizerConfig, tokenize_dataset
from training.synthetic import generate_synthetic


def fake_embed(texts: Sequence[str]) -> np.ndarray:
    return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts])


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train_cli")
    data = generate_synthetic(root / "data", num_users=20, num_items=15)
    tokenize_dataset(
        load_lcrec(data), ItemTokenizerConfig(levels=1, codebook_size=4), root / "tok", embed=fake_embed
    )
    return data, root / "tok"


def _train(dirs: tuple[Path, Path], out: Path, *args: str) -> tuple[int, str]:
    data, tok = dirs
    return run_genrec("train", "--data", str(data), "--tokenizer", str(tok), "--out", str(out), *args)


@pytest.mark.parametrize(
    ("config", "args", "needles"),
    [
        ({"batch_size": 0}, [], ["--config or the train options", "batch_size"]),
        ({"tasks": {"bpr": {"enabled": True, "weight": -2}}}, [], ["tasks.bpr.weight"]),
        ({"lerning_rate": 0.1}, [], ["lerning_rate"]),
        ({}, ["--task", "nope=1"], ["--task", "unknown task 'nope'"]),
        ({}, ["--task", "bpr=lots"], ["--task", "weight must be a number"]),
        ({}, ["--grad-accum", "0"], ["grad_accum"]),
        ({}, ["--patience", "2"], ["val_every"]),
    ],
)
def test_train_names_a_bad_config_value(
    dirs: tuple[Path, Path], tmp_path: Path, config: dict, args: list[str], needles: list[str]
) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"base_model": "tiny", **config}))
    code, output = _train(dirs, tmp_path / "run", "--config", str(path), *args)
    assert code == 2, output
    assert mentions(output, *needles), output
    assert not (tmp_path / "run").exists()


def test_train_names_an_unreadable_config(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text("{not json")
    code, output = _train(dirs, tmp_path / "run", "--config", str(path))
    assert code == 2 and mentions(output, "--config", "cannot read"), output


def test_resume_without_a_checkpoint_is_named(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    code, output = _train(dirs, tmp_path / "run", "--base-model", "tiny", "--max-steps", "1", "--resume")
    assert code == 2 and mentions(output, "--resume", "nothing to resume"), output


@pytest.mark.slow
def test_config_file_and_overrides_reach_the_run(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(
        json.dumps(
            {
                "base_model": "tiny",
                "max_steps": 50,
                "batch_size": 8,
                "with_titles": False,
                "lora_r": 4,
                "tasks": {"sid_to_title": {"enabled": True, "weight": 0.5}},
            }
        )
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a busy 2-core machine: more threads only fight
    try:
        code, output = _train(
            dirs, tmp_path / "run", "--config", str(path), "--max-steps", "2", "--task", "bpr=0.25",
            "--task", "sid_to_title=0", "--checkpoint-every", "1", "--device", "cpu",
        )  # fmt: skip
        assert code == 0, output
        report = json.loads((tmp_path / "run" / RUN_REPORT).read_text())
        config = report["config"]
        assert report["steps"] == 2 and config["max_steps"] == 2
        # the file's r; alpha is 2 r only when --lora-r is given
        assert config["lora_r"] == 4 and config["lora_alpha"] == 32
        assert config["tasks"]["bpr"] == {"enabled": True, "weight": 0.25}
        assert config["tasks"]["sid_to_title"] == {"enabled": False, "weight": 0.0}
        assert set(report["task_examples"]) == {"sequence", "bpr"}
        # and the run resumes from its last checkpoint (already finished: it only merges again)
        code, output = _train(
            dirs, tmp_path / "run", "--config", str(path), "--max-steps", "2", "--task", "bpr=0.25",
            "--task", "sid_to_title=0", "--checkpoint-every", "1", "--device", "cpu", "--resume",
        )  # fmt: skip
        assert code == 0, output
        assert json.loads((tmp_path / "run" / RUN_REPORT).read_text())["resumed_from_step"] == 2
    finally:
        torch.set_num_threads(threads)
