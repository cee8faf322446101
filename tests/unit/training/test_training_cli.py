"""`genrec` offline commands through the real Typer app: the happy path of generate-data and the
error paths of tokenize, train, export and eval (each names the offending option and path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_output import mentions, run_genrec
from fake_embeddings import fake_embed

from training.data import load_lcrec
from training.item_tokenizer import tokenize_dataset
from training.synthetic import NAME, generate_synthetic
from training.tokenizer_config import ItemTokenizerConfig


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("cli") / "data", num_users=20, num_items=15)


@pytest.fixture(scope="module")
def tok_dir(data_dir: Path) -> Path:
    out = data_dir.parent / "tok"
    tokenize_dataset(
        load_lcrec(data_dir), ItemTokenizerConfig(levels=1, codebook_size=4), out, embed=fake_embed
    )
    return out


def test_generate_data_writes_the_deterministic_dataset(tmp_path: Path) -> None:
    out = tmp_path / "data"
    code, output = run_genrec(
        "generate-data", "--out", str(out), "--users", "25", "--items", "12", "--categories", "3"
    )
    assert code == 0, output
    assert mentions(output, "synthetic dataset written to", out)
    data = load_lcrec(out)
    assert data.name == NAME
    assert len(data.sequences) == 25
    assert len(data.items) == 12
    # Same bytes as the library call with the same arguments (the CLI passes every option through).
    reference = generate_synthetic(tmp_path / "ref", num_users=25, num_items=12, num_categories=3, seed=0)
    for name in (f"{NAME}.inter.json", f"{NAME}.item.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()


def test_generate_data_seed_changes_the_data(tmp_path: Path) -> None:
    for seed in ("0", "1"):
        code, output = run_genrec(
            "generate-data", "--out", str(tmp_path / seed), "--users", "10", "--items", "10", "--seed", seed
        )
        assert code == 0, output
    inter = f"{NAME}.inter.json"
    assert (tmp_path / "0" / inter).read_bytes() != (tmp_path / "1" / inter).read_bytes()


def test_generate_data_rejects_impossible_sizes(tmp_path: Path) -> None:
    code, output = run_genrec(
        "generate-data", "--out", str(tmp_path / "d"), "--items", "2", "--categories", "2"
    )
    assert code == 2
    assert mentions(output, "num_items must be >= 5")
    assert not (tmp_path / "d").exists()


def test_tokenize_names_a_missing_data_path(tmp_path: Path) -> None:
    code, output = run_genrec("tokenize", "--data", "/nonexistent", "--out", str(tmp_path / "tok"))
    assert code == 2
    assert mentions(output, "Invalid value for --data", "/nonexistent", "no such dataset directory")
    assert not (tmp_path / "tok").exists()


def test_tokenize_names_an_ambiguous_data_dir(tmp_path: Path) -> None:
    for name in ("A", "B"):
        (tmp_path / f"{name}.inter.json").write_text("{}")
    code, output = run_genrec("tokenize", "--data", str(tmp_path), "--out", str(tmp_path / "tok"))
    assert code == 2
    assert mentions(output, "--data", tmp_path, "A.inter.json, B.inter.json")


def test_tokenize_reads_a_config_file_and_options_override_it(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("training.item_tokenizer.encode_texts", fake_embed)
    config = tmp_path / "tok.json"
    config.write_text(
        '{"sources": ["semantic", "behavior"], "levels": 2, "codebook_size": 3,'
        ' "behavior_codebook_size": 2, "sasrec": {"dim": 8, "epochs": 1}}'
    )
    code, output = run_genrec(
        "tokenize",
        "--data",
        str(data_dir),
        "--out",
        str(tmp_path / "tok"),
        "--config",
        str(config),
        "--levels",
        "1",
    )
    assert code == 0, output
    report = json.loads((tmp_path / "tok" / "tokenizer_report.json").read_text())
    assert report["codebook_sizes"][:2] == [3, 2]
    assert report["extra"]["level_sources"] == ["semantic", "behavior", "disambiguation"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--sources", "semantic,clicks"], ["sources must be distinct names", "clicks"]),
        (["--codebook-size", "99"], ["codebook_size=99 asks for more codes", "15"]),
        (["--config", "/nonexistent.json"], ["Invalid value for --config", "/nonexistent.json"]),
        (["--text-encoder", "/no/such/llm"], ["text_encoder", "/no/such/llm"]),
        (["--last-level", "cluster"], ["last_level", "cluster"]),
    ],
)
def test_tokenize_names_a_bad_setting(
    data_dir: Path, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    code, output = run_genrec("tokenize", "--data", str(data_dir), "--out", str(tmp_path / "tok"), *args)
    assert code == 2
    assert mentions(output, *needles), output
    assert not (tmp_path / "tok").exists()


def test_train_needs_a_tokenizer_dir_with_a_catalog(data_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "not-tokenized"
    empty.mkdir()
    code, output = run_genrec(
        "train",
        "--data",
        str(data_dir),
        "--tokenizer",
        str(empty),
        "--out",
        str(tmp_path / "run"),
        "--base-model",
        "tiny",
    )
    assert code == 2
    assert mentions(output, "Invalid value for --tokenizer", empty, "no catalog.json", "genrec tokenize")
    assert not (tmp_path / "run").exists()


def test_train_names_a_bad_base_model(data_dir: Path, tok_dir: Path, tmp_path: Path) -> None:
    code, output = run_genrec(
        "train",
        "--data", str(data_dir),
        "--tokenizer", str(tok_dir),
        "--out", str(tmp_path / "run"),
        "--base-model", "/nonexistent/model",
    )  # fmt: skip
    assert code == 2
    assert mentions(output, "Invalid value for --base-model", "'/nonexistent/model'", "HF checkpoint")
    assert not (tmp_path / "run").exists()


def test_train_needs_the_trie_before_training(data_dir: Path, tok_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "tok"
    shutil.copytree(tok_dir, partial)
    (partial / "trie.npz").unlink()
    code, output = run_genrec(
        "train",
        "--data", str(data_dir),
        "--tokenizer", str(partial),
        "--out", str(tmp_path / "run"),
        "--base-model", "tiny",
    )  # fmt: skip
    assert code == 2
    assert mentions(output, "Invalid value for --tokenizer", "no trie.npz")
    assert not (tmp_path / "run").exists()


def test_train_names_a_missing_data_path(tok_dir: Path, tmp_path: Path) -> None:
    code, output = run_genrec(
        "train",
        "--data",
        "/nonexistent",
        "--tokenizer",
        str(tok_dir),
        "--out",
        str(tmp_path / "run"),
        "--base-model",
        "tiny",
    )
    assert code == 2
    assert mentions(output, "Invalid value for --data", "/nonexistent")


def test_export_names_the_missing_part_of_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    code, output = run_genrec(
        "export", "--run", str(run), "--artifacts", str(tmp_path / "art"), "--version", "v1"
    )
    assert code == 2
    assert mentions(output, run, "incomplete", "merged missing")
    assert not (tmp_path / "art").exists()


def test_eval_rejects_an_unknown_split(data_dir: Path, tmp_path: Path) -> None:
    code, output = run_genrec(
        "eval", "--artifacts", str(tmp_path), "--data", str(data_dir), "--split", "bogus"
    )
    assert code == 2
    assert mentions(output, "Invalid value for --split", "must be 'valid' or 'test'")


def test_eval_names_a_directory_that_is_not_a_bundle(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code, output = run_genrec(
        "eval", "--artifacts", str(tmp_path), "--data", str(data_dir), "--out", str(out)
    )
    assert code == 2
    assert mentions(output, "Invalid value for --artifacts", tmp_path, "manifest.json not found")
    assert not out.exists()


@pytest.fixture(scope="module")
def bundle_dir(data_dir: Path, tok_dir: Path) -> Path:
    """A tiny model trained for two steps and exported: enough for the eval command's plumbing."""
    import torch

    from training.export import export_run
    from training.finetune import train
    from training.train_config import TrainConfig

    config = TrainConfig(
        base_model="tiny", max_steps=2, batch_size=8, with_titles=False, history_len=8, device="cpu"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_lcrec(data_dir), tok_dir, data_dir.parent / "run", config)
    finally:
        torch.set_num_threads(threads)
    return export_run(data_dir.parent / "run", data_dir.parent / "artifacts", "v1").root


def test_eval_hf_on_cpu_records_device_rows_and_precision(
    bundle_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    reports = {}
    for rows in ("3", None):
        out = tmp_path / f"report-{rows}.json"
        args = ["eval", "--artifacts", str(bundle_dir), "--data", str(data_dir), "--engine", "hf"]
        args += ["--device", "cpu", "--k", "5", "--batch-size", "7", "--out", str(out)]
        args += ["--lists", str(tmp_path / f"lists-{rows}.jsonl")]
        code, output = run_genrec(*args, *(["--rows", rows] if rows else []))
        assert code == 0, output
        reports[rows] = json.loads(out.read_text())
    small, default = reports["3"], reports[None]
    from model.cpu_features import resolve_precision

    # auto: bf16 on a CPU with native bf16, fp32 elsewhere
    precision = resolve_precision("auto", "cpu")
    expected = {
        "engine": "hf",
        "device": "cpu",
        "rows": 3,
        "precision": precision,
        "batch_size": 7,
        "beam": 5,
    }
    assert small["extra"] == expected
    assert default["extra"]["rows"] == 64
    assert small["users"] == default["users"] == 20
    # Rows per forward pass and users per search change the batching, never the lists.
    assert small["metrics"] == pytest.approx(default["metrics"])
    lines = [json.loads(line) for line in (tmp_path / "lists-3.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and all(len(line["items"]) == 5 for line in lines)
    hits = sum(line["target"] in line["items"] for line in lines)
    assert hits / 20 == pytest.approx(small["metrics"]["recall@5"])  # the lists the metrics came from
    assert [line["items"] for line in lines] == [
        json.loads(line)["items"] for line in (tmp_path / "lists-None.jsonl").read_text().splitlines()
    ]


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", "bfloat16"), ("fp32", "float32")])
def test_eval_precision_sets_the_serving_engine_dtype(
    bundle_dir: Path,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    dtype: str,
) -> None:
    """--precision reaches the vLLM engine as its dtype (ENGINE_DTYPE's values); the engine is
    stood in for by the HF reference here, the real one is built in the engine tests."""
    import training.cli
    from model.engine_config import EngineConfig
    from model.hf_engine import hf_recommender

    built: list[EngineConfig] = []

    def build(bundle: Any, config: EngineConfig) -> Any:
        built.append(config)
        return hf_recommender(bundle, beam_width=config.beam_width or 5, max_batch=config.max_batch or 8)

    monkeypatch.setattr(training.cli, "_serving_engine", build)
    out = tmp_path / "report.json"
    args = ["eval", "--artifacts", str(bundle_dir), "--data", str(data_dir), "--k", "5"]
    code, output = run_genrec(*args, "--precision", precision, "--max-users", "4", "--out", str(out))
    assert code == 0, output
    assert [config.dtype for config in built] == [dtype]
    assert json.loads(out.read_text())["extra"]["dtype"] == dtype


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the error of a machine without a GPU"
)
def test_eval_names_cuda_without_a_gpu(data_dir: Path, tmp_path: Path) -> None:
    code, output = run_genrec(
        "eval", "--artifacts", str(tmp_path), "--data", str(data_dir), "--engine", "hf", "--device", "cuda"
    )
    assert code == 2
    assert mentions(output, "Invalid value for --device", "torch sees no GPU")


def test_eval_rejects_an_unknown_device(data_dir: Path, tmp_path: Path) -> None:
    code, output = run_genrec(
        "eval", "--artifacts", str(tmp_path), "--data", str(data_dir), "--engine", "hf", "--device", "tpu"
    )
    assert code == 2
    assert mentions(output, "Invalid value for --device", "must be 'auto', 'cpu' or 'cuda'")


@pytest.mark.parametrize("option", [("--device", "cpu"), ("--rows", "8")])
def test_eval_hf_options_need_the_hf_engine(data_dir: Path, tmp_path: Path, option: tuple[str, str]) -> None:
    code, output = run_genrec("eval", "--artifacts", str(tmp_path), "--data", str(data_dir), *option)
    assert code == 2
    assert mentions(output, "Invalid value for --engine", "apply to --engine hf")


def test_eval_rejects_bad_rows_and_precision(data_dir: Path, tmp_path: Path) -> None:
    base = ("eval", "--artifacts", str(tmp_path), "--data", str(data_dir), "--engine", "hf")
    code, output = run_genrec(*base, "--rows", "0")
    assert code == 2 and mentions(output, "--rows")
    code, output = run_genrec(*base, "--precision", "fp8")
    assert code == 2 and mentions(output, "Invalid value for --precision", "auto, fp32, bf16")


@pytest.mark.parametrize("command", ["eval", "baseline"])
@pytest.mark.parametrize("option", ["--k", "--max-users"])
def test_eval_and_baseline_refuse_zero_k_and_users(
    data_dir: Path, tmp_path: Path, command: str, option: str
) -> None:
    target = ("--artifacts", str(tmp_path)) if command == "eval" else ("--method", "popular")
    code, output = run_genrec(command, *target, "--data", str(data_dir), option, "0")
    assert code == 2, output
    assert mentions(output, option)


def test_eval_refuses_a_beam_narrower_than_k(data_dir: Path, tmp_path: Path) -> None:
    code, output = run_genrec(
        "eval", "--artifacts", str(tmp_path), "--data", str(data_dir), "--k", "20", "--beam", "10"
    )
    assert code == 2
    assert mentions(output, "--beam")
