"""`genrec train --config FILE.json` with option overrides, `--task`, `--resume`: through the real app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_output import mentions, run_genrec
from fake_embeddings import fake_embed

from training.data import load_lcrec
from training.finetune import RUN_REPORT
from training.item_tokenizer import tokenize_dataset
from training.synthetic import generate_synthetic
from training.tokenizer_config import ItemTokenizerConfig
from training.train_config import ScratchShape, TrainConfig


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


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What `genrec train` hands to training.finetune.train, without training."""
    seen: dict[str, object] = {}

    def fake_train(data: object, tokenizer: Path, out: Path, config: object, *, resume: bool) -> Path:
        seen.update(config=config, resume=resume)
        return out / "merged"

    monkeypatch.setattr("training.finetune.train", fake_train)
    return seen


def test_options_keep_their_names_and_override_only_what_is_typed(
    dirs: tuple[Path, Path], tmp_path: Path, captured: dict[str, object]
) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"base_model": "tiny", "batch_size": 8, "with_titles": True, "lr": 0.5}))
    code, output = _train(
        dirs, tmp_path / "run", "--config", str(path), "--max-examples", "5", "--no-titles", "--lora",
        "--lora-r", "4", "--task", "bpr=0.5", "--anneal", "--embedding-dropout", "0.1",
        "--scratch-sid-init", "random", "--lr-schedule", "cosine", "--resume",
    )  # fmt: skip
    assert code == 0, output
    config = captured["config"]
    assert isinstance(config, TrainConfig) and captured["resume"] is True
    assert config.max_train_examples == 5 and not config.with_titles and not config.full_finetune
    assert config.lora_r == 4 and config.lora_alpha == 8  # alpha = 2 r: the file does not set it
    assert config.tasks.bpr.enabled and config.tasks.bpr.weight == 0.5
    assert config.anneal and config.embedding_dropout == 0.1 and config.lr_schedule == "cosine"
    # the file's values stand where no option was typed (an option's default never overrides them)
    assert config.batch_size == 8 and config.lr == 0.5 and config.base_model == "tiny"


def test_nested_scratch_options_reach_the_config(
    dirs: tuple[Path, Path], tmp_path: Path, captured: dict[str, object]
) -> None:
    code, output = _train(
        dirs, tmp_path / "run", "--base-model", "scratch", "--scratch-hidden", "128", "--scratch-heads", "2",
        "--lora-r", "4", "--lora-alpha", "5", "--full-finetune",
    )  # fmt: skip
    assert code == 0, output
    config = captured["config"]
    assert isinstance(config, TrainConfig)
    assert (config.scratch.hidden, config.scratch.heads, config.scratch.layers) == (128, 2, 4)
    assert config.lora_alpha == 5 and config.full_finetune


def test_a_bad_option_value_names_the_option(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    code, output = _train(dirs, tmp_path / "run", "--base-model", "tiny", "--warmup-ratio", "2")
    assert code == 2 and mentions(output, "Invalid value for --warmup-ratio", "warmup_ratio"), output
    code, output = _train(dirs, tmp_path / "run", "--objective", "bogus")
    assert code == 2 and mentions(output, "--objective", "bogus"), output


def test_help_shows_every_setting_with_its_description_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.config_options import field_options

    monkeypatch.setenv("COLUMNS", "200")  # no option name or long word cut short
    code, output = run_genrec("train", "--help")
    assert code == 0
    options = field_options(TrainConfig, skip=("tasks",))
    assert len(options) == len(TrainConfig.model_fields) - 2 + len(ScratchShape.model_fields)
    for option in options:
        field = TrainConfig.model_fields[option.path[0]]
        if len(option.path) == 2:
            field = ScratchShape.model_fields[option.path[1]]
        assert mentions(output, option.names[0], field.description), option.names
    assert mentions(output, "--max-examples", "--titles", "--full-finetune", "--lora", "--task", "--resume")
    assert mentions(output, "[default: smollm2]", "[default: 0.03]", "[default: no-titles]")
    assert mentions(output, "(one of: sequence, prompt)")
