"""The main job on a tiny model: train -> profile -> search -> report -> export, through the CLI.

One module-scoped run (a few seconds of training, a 4-pair profile, 8 real evaluations) feeds every
test; the export is reloaded in a Python process that cannot import elastiq.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from search.cli import main
from search.config import load_run_config
from search.export import choose
from search.pipeline import RESOLVED_CONFIG
from supernet.checkpoint import load_tokenizer
from supernet.data import load_dataset_config
from tests.search.test_cli import _tiny_run

PROFILE = "tiny-eager"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("search")
    config = _tiny_run(tmp)
    assert main(["-q", "run", "--config", str(config)]) == 0
    return tmp / "run"


def test_search_spends_its_budget_and_keeps_a_real_front(finished_run: Path) -> None:
    folder = finished_run / "search" / PROFILE
    history = pd.read_csv(folder / "evaluations.csv")
    assert len(history) == 8 and history["key"].is_unique
    front = pd.read_csv(folder / "front.csv")
    assert set(front["key"]) <= set(history["key"])  # only really evaluated points
    objectives = front[["accuracy", "latency_ms"]].to_numpy() * [-1, 1]
    assert len(NonDominatedSorting().do(objectives, only_non_dominated_front=True)) == len(front)
    resolved = yaml.safe_load((finished_run / RESOLVED_CONFIG).read_text())
    assert resolved["search"]["profile"] == PROFILE and resolved["search"]["budget"] == 8
    # the profile's table was measured by the run itself, validated and calibrated
    model = json.loads((finished_run / "profiles" / PROFILE / "latency_model.json").read_text())
    assert model["validation"]["raw_table"]["n"] == 4
    measured = pd.read_csv(folder / "front_measured.csv")
    assert (measured["measured_latency_ms"] > 0).all()
    baselines = json.loads((folder / "baselines.json").read_text())
    assert [b["precision"] for b in baselines] == ["fp32", "bf16"]  # int8_static is not in the tiny profile


def test_search_resumes_without_reevaluating(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from search import bert_evaluation

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored candidate was evaluated again")

    monkeypatch.setattr(bert_evaluation.BertEvaluator, "evaluate_candidate", fail)
    assert main(["-q", "search", "--config", str(finished_run / RESOLVED_CONFIG)]) == 0
    assert len(pd.read_csv(finished_run / "search" / PROFILE / "evaluations.csv")) == 8


def test_baselines_reuse_the_searchs_own_evaluations(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full model in a searched precision is in the first population: its baseline is that row, and
    its end-to-end latency is the front's re-measurement, not a second evaluation."""
    from search import bert_evaluation, search_run

    folder = finished_run / "search" / PROFILE
    context = search_run.load_context(load_run_config(finished_run / RESOLVED_CONFIG))
    history = pd.read_csv(folder / "evaluations.csv")
    measured = pd.read_csv(folder / "front_measured.csv")
    space = context.space
    reused = {p: space.keys(space.uniform(space.space.largest(), p)[None, :])[0] for p in space.precisions}
    evaluated: list[str] = []
    original = bert_evaluation.BertEvaluator.evaluate_candidate

    def counting(self: bert_evaluation.BertEvaluator, arch: object, policy: object) -> dict[str, float]:
        evaluated.append("call")
        return original(self, arch, policy)  # type: ignore[arg-type]

    monkeypatch.setattr(bert_evaluation.BertEvaluator, "evaluate_candidate", counting)
    saved = (folder / "baselines.json").read_text()
    (folder / "baselines.json").unlink()
    try:
        baselines = search_run.evaluate_baselines(context, history=history, measured=measured)
    finally:
        (folder / "baselines.json").write_text(saved)
    assert [b["precision"] for b in baselines] == ["fp32", "bf16"]
    assert "fp32" in reused  # the tiny profile searches fp32, so at least that baseline comes from the search
    assert len(evaluated) == sum(b["precision"] not in reused for b in baselines)
    for baseline in baselines:
        if baseline["precision"] not in reused:
            continue
        key = reused[baseline["precision"]]
        row = history.set_index("key").loc[key]
        assert [baseline[m] for m in ("accuracy", "latency_ms", "size_mb", "macs_m")] == [
            row[m] for m in ("accuracy", "latency_ms", "size_mb", "macs_m")
        ]
        if key in set(measured["key"]):
            assert baseline["measured_latency_ms"] == measured.set_index("key").loc[key, "measured_latency_ms"]


def test_report_is_self_contained(finished_run: Path) -> None:
    page = (finished_run / "search" / PROFILE / "report" / "report.html").read_text()
    assert "Pareto front" in page and "data:image/png;base64," in page and "Predictor quality" in page
    assert "Baselines: the full model" in page and "<td>fp32</td>" in page
    for name in ("accuracy_vs_latency.png", "accuracy_vs_size.png", "hypervolume.png", "front.csv"):
        assert (finished_run / "search" / PROFILE / "report" / name).stat().st_size > 0


def test_exports_are_checked_and_carry_a_model_card(finished_run: Path) -> None:
    for name in ("most_accurate", "fastest"):
        folder = finished_run / "exported" / PROFILE / name
        card = json.loads((folder / "model_card.json").read_text())
        # Accuracy must match; latency is re-measured and compared in the card, but not asserted here: a
        # sub-millisecond tiny model on a shared CI machine says nothing about speed (benchmarks do).
        assert card["accuracy_check_passed"], card
        assert card["exported_program"]["measured_latency_ms"] > 0
        assert card["check_passed"] == (card["accuracy_check_passed"] and card["latency_check_passed"])
        assert (folder / "model.pt2").is_file() and (folder / "model.safetensors").is_file()
        supernet_labels = json.loads((finished_run / "supernet" / "elastiq_config.json").read_text())["label_names"]
        assert card["label_names"] == supernet_labels and len(supernet_labels) == 2  # logits -> labels, standalone
        assert card["recorded_by_search"]["accuracy"] == pytest.approx(card["exported_program"]["accuracy"], abs=0.005)
    fastest = json.loads((finished_run / "exported" / PROFILE / "fastest" / "model_card.json").read_text())
    front = pd.read_csv(finished_run / "search" / PROFILE / "front.csv")
    assert fastest["recorded_by_search"]["latency_ms"] == pytest.approx(front["latency_ms"].min())


def test_the_search_starts_from_the_full_model_in_each_precision(finished_run: Path) -> None:
    history = pd.read_csv(finished_run / "search" / PROFILE / "evaluations.csv")
    initial = [json.loads(d) for d in history.loc[history["method"] == "initial", "description"]]
    assert len(initial) == 3  # one per precision of the tiny profile: fp32, int8_weight_only, bf16
    shape = json.loads((finished_run / "supernet" / "elastiq_config.json").read_text())["shape"]
    for candidate in initial:  # the full model
        assert candidate["arch"] == {"heads": shape["heads"], "ffn": shape["ffn"]}
    mixes = [set(c["policy"]["layers"].values()) for c in initial]  # uniform: one precision each (fp32 is implicit)
    assert sorted(map(sorted, mixes)) == [[], ["bf16"], ["int8_weight_only"]]


def test_export_reloads_without_elastiq_and_reproduces_the_accuracy(finished_run: Path, tmp_path: Path) -> None:
    folder = finished_run / "exported" / PROFILE / "most_accurate"
    card = json.loads((folder / "model_card.json").read_text())
    config = yaml.safe_load((finished_run / RESOLVED_CONFIG).read_text())
    data = load_dataset_config(config["data"], seed=config["seed"]).validation
    n = min(config["search"]["validation_examples"], len(data))
    batch = load_tokenizer(folder)(list(data.texts[:n]), padding=True, return_tensors="pt")
    torch.save(
        {"inputs": [batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")], "labels": data.labels[:n]},
        tmp_path / "batch.pt",
    )
    code = f"""
import importlib.util, sys
sys.path.append({sysconfig.get_paths()["purelib"]!r})
import torch
assert importlib.util.find_spec("supernet") is None and importlib.util.find_spec("search") is None
module = torch.export.load({str(folder / "model.pt2")!r}).module()
saved = torch.load({str(tmp_path / "batch.pt")!r})
with torch.no_grad():
    predictions = module(*saved["inputs"]).argmax(-1)
print((predictions == torch.tensor(saved["labels"])).float().mean().item())
"""
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    accuracy = float(result.stdout.strip().splitlines()[-1])
    assert accuracy == pytest.approx(card["recorded_by_search"]["accuracy"], abs=1e-6)


def test_choose_by_rank_and_rule() -> None:
    front = pd.DataFrame({"accuracy": [0.9, 0.85, 0.8], "latency_ms": [30.0, 20.0, 10.0], "size_mb": [9.0, 5.0, 7.0]})
    assert choose(front, rank=1)["latency_ms"] == 20.0
    assert choose(front, rule="fastest: accuracy >= 0.84")["latency_ms"] == 20.0
    assert choose(front, rule="smallest")["size_mb"] == 5.0
    assert choose(front, rule="most_accurate")["accuracy"] == 0.9


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "--run-dir", "RUN", "--profile", PROFILE, "--rank", "99"], "outside the front"),
        (["export", "--run-dir", "RUN", "--profile", PROFILE, "--rule", "fastest: accuracy >= 2"], "no front member"),
        (["export", "--run-dir", "RUN", "--profile", PROFILE, "--rule", "cheapest"], "cannot read rule"),
        (["report", "--run-dir", "RUN", "--profile", "x86-eager-b1"], "holds no search results"),
        (["search", "--config", "RUN/config.resolved.yaml", "--profile", "nope"], "unknown hardware profile"),
    ],
)
def test_cli_errors_are_one_line(
    finished_run: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [a.replace("RUN", str(finished_run)) for a in argv]
    capsys.readouterr()
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
