"""The elastiq CLI on a tiny model: the happy path end to end, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.pipeline import RESOLVED_CONFIG
from supernet.checkpoint import default_checkpoint_dir, load_model
from tests.conftest import save_tiny_bert

#: A profile cheap enough to measure in a test: eager, batch 1, 16 tokens, few repeats.
TINY_PROFILE = {
    "schema_version": 1,
    "name": "tiny-eager",
    "device": "cpu",
    "requires": [],
    "runtime": "eager",
    "batch_size": 1,
    "sequence_length": 16,
    "threads": 1,
    "warmup": 1,
    "repeats": 3,
    "precisions": ["fp32", "int8_weight_only", "bf16"],
}


def tiny_search_section(tmp_path: Path) -> dict:
    """A search on the tiny profile: its latency table is measured by the run itself (4 validation pairs)."""
    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "tiny-eager.yaml").write_text(yaml.safe_dump(TINY_PROFILE))
    return {
        "profile": "tiny-eager",
        "profile_dirs": [str(profiles)],
        "objectives": [{"accuracy": "max"}, {"latency_ms": "min"}],
        "method": "predictor",
        "budget": 8,
        "population": 4,
        "inner_generations": 5,
        "validation_examples": 12,
        "calibration_batches": 1,
        "profile_validation": 4,
        "export": ["most_accurate", "fastest"],
    }


def _tiny_run(tmp_path: Path) -> Path:
    """A tiny checkpoint (with the real tokenizer files) and a small CSV task; returns the config path."""
    ckpt = save_tiny_bert(tmp_path / "ckpt")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (ckpt / name).write_bytes((default_checkpoint_dir() / name).read_bytes())
    rows = ["text,label"] + [f"great fun film number {i},pos" for i in range(30)]
    rows += [f"dull boring film number {i},neg" for i in range(30)]
    (tmp_path / "task.csv").write_text("\n".join(rows) + "\n")
    config = {
        "run_dir": str(tmp_path / "run"),
        "seed": 1,
        "model": {"checkpoint": str(ckpt)},
        "data": {"path": str(tmp_path / "task.csv")},
        "train": {"steps": 4, "batch_size": 8, "max_length": 16, "checkpoint_every": 2, "importance_batches": 1},
        "evaluate": {"archs": ["largest", "smallest"], "num_random": 1},
        "search": tiny_search_section(tmp_path),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_train_evaluate_extract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _tiny_run(tmp_path)
    assert main(["-q", "run", "--config", str(config)]) == 0
    run = tmp_path / "run"
    resolved = yaml.safe_load((run / RESOLVED_CONFIG).read_text())
    assert resolved["seed"] == 1 and resolved["train"]["steps"] == 4 and "seed" not in resolved["train"]
    rows = json.loads((run / "evaluation.json").read_text())
    assert [r["name"] for r in rows] == ["largest", "smallest", "random0"]
    assert rows[0]["params"] > rows[1]["params"] and all(0 <= r["accuracy"] <= 1 for r in rows)
    assert "run folder:" in capsys.readouterr().out

    assert main(["-q", "evaluate", "--run-dir", str(run), "--arch", '{"heads": [2, 1], "ffn": [32, 16]}']) == 0
    assert json.loads((run / "evaluation.json").read_text())[0]["arch"] == {"heads": [2, 1], "ffn": [32, 16]}

    out = tmp_path / "sub"
    assert main(["extract", "--run-dir", str(run), "--arch", "smallest", "--out", str(out)]) == 0
    sub = load_model(out)
    assert sub.shape.heads == (1,) and (out / "tokenizer.json").exists()


@pytest.mark.parametrize(
    ("argv_tail", "edit", "message"),
    [
        (["--config", "missing.yaml"], None, "does not exist"),
        (None, {"learning_rate_typo": 1}, "unknown config keys"),
        (None, {"train": {"steps": 0}}, "train.steps must be >= 1"),
        (None, {"model": {"checkpoint": "/nonexistent/folder"}}, "does not exist"),
        (None, {"model": {"depth_rule": "last"}}, "unknown model.depth_rule 'last'; use one of first, spread"),
        (None, {"data": {"path": "/nonexistent.csv"}}, "nonexistent.csv"),
        (None, {"space": {"head_choices": [1, 3]}}, "must include the full size 4"),
        (None, {"search": {"proposal": "nearby"}}, "search.proposal must be one of local, global"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_tail: list[str] | None, edit: dict | None, message: str
) -> None:
    config = _tiny_run(tmp_path)
    if edit is not None:
        data = yaml.safe_load(config.read_text())
        for key, value in edit.items():
            data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
        config.write_text(yaml.safe_dump(data))
    argv = ["-q", "train", *(argv_tail or ["--config", str(config)])]
    capsys.readouterr()  # drop what building the fixture printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("elastiq: error:") and message in err and "\n" not in err and "Traceback" not in err


def test_bad_arch_and_untrained_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "evaluate", "--run-dir", str(tmp_path)]) == 2
    assert "train the run first" in capsys.readouterr().err
    config = _tiny_run(tmp_path)
    assert main(["-q", "train", "--config", str(config)]) == 0
    run = str(tmp_path / "run")
    assert main(["-q", "evaluate", "--run-dir", run, "--arch", '{"heads": [4], "ffn": [50]}']) == 2
    assert "not one of the FFN choices" in capsys.readouterr().err
    assert main(["-q", "evaluate", "--run-dir", run, "--arch", "biggest"]) == 2
    assert "cannot read architecture" in capsys.readouterr().err


def test_console_script_error_is_one_line_on_stderr() -> None:
    """The installed entry point (search.entry) in a fresh process: torchao's import-time notices about
    CUDA-only extensions are muted, so a bad input leaves exactly the one error line."""
    code = "import sys; from search.entry import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "profile", "--profile", "no-such-profile"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "elastiq: error: unknown hardware profile 'no-such-profile'; known profiles: "
        "onnxruntime-cpu-b1, x86-eager-b1, x86-inductor-b1, x86-inductor-b32"
    ]
