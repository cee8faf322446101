"""Data-parallel `genrec train` under `accelerate launch`: two CPU processes (gloo) train the same
global batches as one process, so they give the same loss curve, and only one of them writes the
run directory, whose merged model exports.

The two-process run is a real ``accelerate launch`` subprocess of the tiny model on a small
synthetic dataset (nothing is downloaded); the one-process run is the same command in-process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cli_output import run_genrec
from fake_embeddings import fake_embed
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from model.bundle import load_bundle
from training.data import load_lcrec
from training.data_parallel import DataParallel
from training.finetune import MERGED_DIR, RUN_REPORT
from training.item_tokenizer import tokenize_dataset
from training.synthetic import generate_synthetic
from training.tokenizer_config import ItemTokenizerConfig

REPO = Path(__file__).resolve().parents[3]
# batch 3 x accum 2 over 40 examples: uneven slices (1 and 2 rows), an epoch's last batch of a
# single row (one process gets an empty slice), and 8 steps cross into the second epoch.
# No dropout anywhere (LoRA's included) and fp32, so both runs compute the same function.
TRAIN_ARGS = (
    "--base-model", "tiny", "--max-steps", "8", "--batch-size", "3", "--grad-accum", "2",
    "--lora-dropout", "0", "--precision", "fp32", "--device", "cpu", "--no-titles", "--seed", "3",
)  # fmt: skip
# fp32 summed in another order: each process pads its slice to its own longest row and sums its
# own loss terms and gradients before the all-reduce. That moves the loss by ~1e-7 relative
# (measured: at most 2.1e-7 over these 8 steps); 1e-5 leaves room for Adam to carry such noise a few
# steps, while a wrong reduction is far off (without the gradient sum: 3.7e-3).
LOSS_RTOL = 1e-5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_slices_of_a_global_batch_cover_it_once_in_order() -> None:
    batch = list(range(7))
    for world in (1, 2, 3, 8):
        slices = [
            DataParallel(SimpleNamespace(num_processes=world, process_index=r, device="cpu")).shard(batch)
            for r in range(world)
        ]
        assert [x for s in slices for x in s] == batch
        assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_one_process_shares_nothing() -> None:
    world = DataParallel()
    assert world.is_main and not world.distributed
    assert world.shard([1, 2]) == [1, 2] and world.sum_int(5) == 5
    assert world.from_main(lambda: "x") == "x"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data_parallel")
    data = generate_synthetic(root / "data", num_users=40, num_items=30)
    tokenize_dataset(
        load_lcrec(data), ItemTokenizerConfig(levels=2, codebook_size=4), root / "tok", embed=fake_embed
    )
    return data, root / "tok"


def launch_two_processes(data: Path, tok: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """`accelerate launch` of `genrec train` on 2 CPU processes (the command docs/scale.md gives)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "-m", "genrec_cli",
        "train", "--data", str(data), "--tokenizer", str(tok), "--out", str(out), *TRAIN_ARGS,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
def test_two_processes_follow_the_one_process_loss_curve_and_export_once(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    data, tok = dirs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a busy 2-core machine: more threads only fight
    try:
        code, output = run_genrec(
            "train", "--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "one"), *TRAIN_ARGS
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0, output
    two = tmp_path / "two"
    result = launch_two_processes(data, tok, two)
    assert result.returncode == 0, result.stdout + result.stderr

    one_report = json.loads((tmp_path / "one" / RUN_REPORT).read_text())
    two_report = json.loads((two / RUN_REPORT).read_text())
    assert len(two_report["loss_curve"]) == two_report["steps"] == 8
    np.testing.assert_allclose(two_report["loss_curve"], one_report["loss_curve"], rtol=LOSS_RTOL)
    assert two_report["tokens"] == one_report["tokens"]  # the global batches, not one slice
    assert two_report["loss_curve"][-1] < two_report["loss_curve"][0]

    # one process wrote the run: one merged model beside the base it started from, one message
    assert sorted(p.relative_to(two).parts[0] for p in two.rglob("model.safetensors")) == ["base", MERGED_DIR]
    assert result.stdout.count("merged model saved to") == 1, result.stdout
    one_weights = load_file(str(tmp_path / "one" / MERGED_DIR / "model.safetensors"))
    two_weights = load_file(str(two / MERGED_DIR / "model.safetensors"))
    assert one_weights.keys() == two_weights.keys()
    for name, weight in one_weights.items():
        torch.testing.assert_close(two_weights[name], weight, rtol=1e-4, atol=1e-5, msg=name)
    AutoModelForCausalLM.from_pretrained(str(two / MERGED_DIR))

    code, output = run_genrec(
        "export", "--run", str(two), "--artifacts", str(tmp_path / "art"), "--version", "dp"
    )
    assert code == 0, output
    bundle = load_bundle(tmp_path / "art" / "dp")
    assert len(bundle.catalog) == 30
