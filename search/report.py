"""``elastiq report``: the Pareto front of a search as CSV, plots and one self-contained HTML page.

The page embeds its plots (base64 PNG), so it can be mailed or archived as one file. It shows what a
user needs to trust the front: every evaluated candidate and the front on accuracy vs latency and vs
size with the full-model baselines (fp32, bf16, int8_static on the same profile) marked; the front as
a table with the latency the search used beside the one re-measured on the device; hypervolume
against evaluations; the predictors' quality per iteration (cross-validated, and on the candidates
they then proposed); and the profile's latency-table validation.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import pandas as pd

from search.search_run import (
    BASELINES_JSON,
    FRONT_CSV,
    FRONT_MEASURED_CSV,
    HYPERVOLUME_JSON,
)
from supernet.atomic import atomic_write, atomic_write_text
from supernet.errors import ConfigError

REPORT_DIR = "report"


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _scatter(history: pd.DataFrame, front: pd.DataFrame, baselines: list[dict[str, Any]], x: str, xlabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter(history[x], 100 * history["accuracy"], s=12, c="#bbbbbb", label="evaluated")
    ordered = front.sort_values(x)
    ax.plot(ordered[x], 100 * ordered["accuracy"], "o-", c="#1f77b4", ms=5, label="Pareto front")
    for baseline in baselines:
        ax.scatter(
            baseline[x], 100 * baseline["accuracy"], marker="*", s=140, zorder=5, label=f"full {baseline['precision']}"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%, validation subset)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _hypervolume_plot(curve: list[list[float]]) -> bytes:
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    if curve:
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", ms=4)
    ax.set_xlabel("real evaluations")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    return _png(fig)


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="t", escape=True)


def _front_table(front: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, row in front.iterrows():
        description = json.loads(row["description"]) if isinstance(row.get("description"), str) else {}
        arch = description.get("arch", {})
        layers = description.get("policy", {}).get("layers", {})
        mix = pd.Series(list(layers.values()), dtype=object).value_counts().to_dict() if layers else {}
        rows.append(
            {
                "accuracy %": 100 * row["accuracy"],
                "latency ms (estimate)": row["latency_ms"],
                "latency ms (measured)": row.get("measured_latency_ms", float("nan")),
                "size MB": row["size_mb"],
                "depth": len(arch.get("heads", [])),
                "heads": " ".join(map(str, arch.get("heads", []))),
                "ffn": " ".join(map(str, arch.get("ffn", []))),
                "non-fp32 layers": ", ".join(f"{k}: {v}" for k, v in mix.items()) or "none",
            }
        )
    return pd.DataFrame(rows)


def _quality_table(quality: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for entry in quality:
        for metric, q in entry.get("metrics", {}).items():
            cv, new = q.get("cv", {}), q.get("new_candidates", {})
            rows.append(
                {
                    "iteration": entry.get("iteration"),
                    "trained on": entry.get("n_train"),
                    "metric": metric,
                    "model": q.get("family"),
                    "CV MAPE %": cv.get("mape"),
                    "CV Kendall tau": cv.get("kendall_tau"),
                    "next batch MAPE %": new.get("mape"),
                    "next batch Kendall tau": new.get("kendall_tau"),
                }
            )
    return pd.DataFrame(rows)


def write_report(search_dir: str | Path, *, latency_validation: dict[str, Any] | None = None) -> Path:
    """Write ``report/`` (front.csv, three PNG plots, report.html) next to a search's results."""
    folder = Path(search_dir)
    evaluations = folder / "evaluations.csv"
    if not evaluations.is_file():
        raise ConfigError(f"{folder} holds no search results ({evaluations.name}); run `elastiq search` first")
    history = pd.read_csv(evaluations)
    front_path = folder / FRONT_MEASURED_CSV if (folder / FRONT_MEASURED_CSV).is_file() else folder / FRONT_CSV
    front = pd.read_csv(front_path)
    baselines = _read_json(folder / BASELINES_JSON, [])
    curve = _read_json(folder / HYPERVOLUME_JSON, [])
    quality = _read_json(folder / "predictor_quality.json", [])
    settings = _read_json(folder / "search.json", {})
    out = folder / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)

    plots = {
        "accuracy_vs_latency.png": _scatter(history, front, baselines, "latency_ms", "latency (ms, profile estimate)"),
        "accuracy_vs_size.png": _scatter(history, front, baselines, "size_mb", "size (MB, serialized)"),
        "hypervolume.png": _hypervolume_plot(curve),
    }
    for name, data in plots.items():
        _write_bytes(out / name, data)
    table = _front_table(front)
    atomic_write(out / FRONT_CSV, lambda tmp: table.to_csv(tmp, index=False))

    baseline_table = pd.DataFrame(
        [
            {
                "full model": b["precision"],
                "accuracy %": 100 * b["accuracy"],
                "latency ms (estimate)": b["latency_ms"],
                "latency ms (measured)": b.get("measured_latency_ms"),
                "size MB": b["size_mb"],
            }
            for b in baselines
        ]
    )
    sections = [
        f"<h1>elastiq search: {html.escape(folder.name)}</h1>",
        f"<p>{len(history)} candidates really evaluated; method <b>{html.escape(str(settings.get('method', '?')))}</b>,"
        f" seed {settings.get('seed', '?')}, objectives {html.escape(str(settings.get('objectives', '?')))}.</p>",
        _img(plots["accuracy_vs_latency.png"], "accuracy vs latency"),
        _img(plots["accuracy_vs_size.png"], "accuracy vs size"),
        "<h2>Pareto front (really evaluated)</h2>",
        _table(table),
        "<h2>Baselines: the full model on the same profile</h2>",
        _table(baseline_table) if len(baseline_table) else "<p>none</p>",
        "<h2>Hypervolume vs evaluations</h2>",
        _img(plots["hypervolume.png"], "hypervolume"),
        "<h2>Predictor quality</h2>",
        _table(_quality_table(quality)) if quality else "<p>no predictors (not the predictor method)</p>",
    ]
    if latency_validation:
        used = latency_validation.get("used", "")
        rows = [
            {"estimate": k, "used by the search": k == used, **metrics}
            for k, metrics in latency_validation.items()
            if isinstance(metrics, dict)
        ]
        sections += ["<h2>Latency model validation (profile)</h2>", _table(pd.DataFrame(rows))]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
        "table.t{border-collapse:collapse;font-size:13px}"
        "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>elastiq report</title><style>{style}</style></head>"
    )
    page += "<body>" + "\n".join(sections) + "</body></html>\n"
    atomic_write_text(out / "report.html", page)
    return out / "report.html"
