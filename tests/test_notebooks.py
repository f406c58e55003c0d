"""The notebooks run top to bottom: quickstart.ipynb makes a tiny run (train -> search -> report -> export),
results.ipynb opens it, and without a run folder results.ipynb stops at once with a message saying how
to make one. They execute in a real Jupyter kernel (``python3``: ipykernel's own spec, which starts the
interpreter running these tests), from the repository root, as a user's "Run all" would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 300
TINY_PROFILE = "tiny-eager"  # the profile quickstart.ipynb defines for its toy model


def load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def execute(notebook: nbformat.NotebookNode) -> float:
    """Run a notebook in a fresh kernel, outputs into ``notebook``; raises ``CellExecutionError`` at the first
    error. Returns the seconds it took."""
    start = time.perf_counter()
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    return time.perf_counter() - start


def outputs(notebook: nbformat.NotebookNode) -> list[dict[str, Any]]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def rich(notebook: nbformat.NotebookNode, mime: str) -> list[str]:
    return [o["data"][mime] for o in outputs(notebook) if mime in o.get("data", {})]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, Path]:
    run_dir = tmp_path_factory.mktemp("quickstart") / "run"
    notebook = load("quickstart")
    with pytest.MonkeyPatch.context() as patch:  # the kernel inherits this process's environment
        patch.setenv("ELASTIQ_NOTEBOOK_DIR", str(run_dir))
        # One thread suits the toy model and keeps the run fast on a busy machine: several threads fighting
        # for two loaded cores made its 40 training steps 10x slower.
        patch.setenv("OMP_NUM_THREADS", "1")
        print(f"quickstart.ipynb executed in {execute(notebook):.1f} s")
    return notebook, run_dir


def test_the_kernel_is_this_interpreter() -> None:
    """No set-up step: ipykernel's native ``python3`` spec runs ``sys.executable`` (the venv's python)."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.executable)")])
    execute(notebook)
    assert notebook.cells[0].outputs[0]["text"].strip() == sys.executable


def test_committed_notebooks_have_no_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"clear the outputs of {path.name}"


def test_quickstart_trains_searches_reports_and_exports(quickstart: tuple[nbformat.NotebookNode, Path]) -> None:
    notebook, run_dir = quickstart
    assert not [o for o in outputs(notebook) if o["output_type"] == "error"]
    assert (run_dir / "supernet" / "model.safetensors").is_file()
    search = run_dir / "search" / TINY_PROFILE
    assert len(pd.read_csv(search / "evaluations.csv")) == 8  # the notebook's budget
    assert (search / "report" / "report.html").stat().st_size > 0
    folder = run_dir / "exported" / TINY_PROFILE / "fastest"
    card = json.loads((folder / "model_card.json").read_text())
    assert card["accuracy_check_passed"], card
    assert (folder / "model.pt2").stat().st_size > 0
    # the front shown as a table, one plot inline, and the export reloaded with plain torch
    assert any("latency_ms" in html and "<table" in html for html in rich(notebook, "text/html"))
    assert rich(notebook, "image/png")
    printed = "".join(o.get("text", "") for o in outputs(notebook) if o["output_type"] == "stream")
    assert "' -> pos" in printed or "' -> neg" in printed


def test_results_opens_the_quickstart_run(
    quickstart: tuple[nbformat.NotebookNode, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, run_dir = quickstart
    monkeypatch.setenv("ELASTIQ_RESULTS_DIR", str(run_dir))
    monkeypatch.setenv("ELASTIQ_PROFILE", TINY_PROFILE)
    notebook = load("results")
    print(f"results.ipynb executed in {execute(notebook):.1f} s")
    assert not [o for o in outputs(notebook) if o["output_type"] == "error"]
    tables = rich(notebook, "text/html")
    assert any("latency ms (measured)" in html and "non-fp32 layers" in html for html in tables)  # the front
    assert any("full model" in html and "fp32" in html for html in tables)  # the baselines
    assert any("CV Kendall tau" in html for html in tables)  # predictor quality
    # accuracy vs latency, accuracy vs size, estimated vs measured latency, hypervolume
    assert len(rich(notebook, "image/png")) == 4


def test_results_without_a_run_folder_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-run"
    monkeypatch.setenv("ELASTIQ_RESULTS_DIR", str(missing))
    monkeypatch.delenv("ELASTIQ_PROFILE", raising=False)
    notebook = load("results")
    with pytest.raises(CellExecutionError):
        execute(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    (error,) = [o for o in code[0].outputs if o["output_type"] == "error"]
    assert error["ename"] == "FileNotFoundError"
    assert str(missing / "search" / "x86-inductor-b1") in error["evalue"] and "make demo" in error["evalue"]
    assert all(not cell.outputs for cell in code[1:])  # it stopped at the first code cell
