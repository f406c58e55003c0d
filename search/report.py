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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from hardware_profiles.latency_model import validation_rows
from search.results import FRONT_CSV, SearchResults, load_results
from supernet.atomic import atomic_write, atomic_write_text

REPORT_DIR = "report"
#: Plot an axis on a log scale when its values span more than this factor.
LOG_SCALE_SPAN = 10.0
_AXIS_LABELS = {
    "latency_ms": "latency (ms, profile estimate)",
    "measured_latency_ms": "latency (ms, measured)",
    "size_mb": "size (MB, serialized)",
    "macs_m": "MACs (millions)",
}


def png_bytes(fig: Figure) -> bytes:
    """A figure as PNG bytes (for embedding); figures here are plain ``Figure`` objects, never pyplot's,
    so building a report does not switch the backend of a user's notebook or GUI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_front(results: SearchResults, x: str = "latency_ms") -> Figure:
    """Accuracy against ``x`` (a metric column): every evaluated candidate, the front, the baselines.

    The x axis turns logarithmic when its values span more than ``LOG_SCALE_SPAN`` (1 ms sub-networks
    beside a 170 ms bf16 baseline would otherwise squash the front into one corner).
    """
    history, front, baselines = results.history, results.front, results.baselines
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ax.scatter(history[x], 100 * history["accuracy"], s=12, c="#bbbbbb", label="evaluated")
    if len(front):
        ordered = front.sort_values(x)
        ax.plot(ordered[x], 100 * ordered["accuracy"], "o-", c="#1f77b4", ms=5, label="Pareto front")
    for baseline in (b for b in baselines if x in b):
        ax.scatter(
            baseline[x], 100 * baseline["accuracy"], marker="*", s=140, zorder=5, label=f"full {baseline['precision']}"
        )
    xlabel = _AXIS_LABELS.get(x, x)
    values = [*history[x], *(b[x] for b in baselines if x in b)]
    if values and min(values) > 0 and max(values) / min(values) > LOG_SCALE_SPAN:
        ax.set_xscale("log")
        xlabel += ", log scale"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%, validation subset)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_hypervolume(results: SearchResults) -> Figure:
    """Hypervolume of the evaluated points after each batch (the search's own reference point)."""
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.subplots()
    curve = results.hypervolume
    if curve:
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", ms=4)
    ax.set_xlabel("real evaluations")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    return fig


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="t", escape=True)


def front_table(front: pd.DataFrame) -> pd.DataFrame:
    """The front for reading: accuracy in %, both latencies, size, the architecture and the precision mix."""
    rows = []
    for _, row in front.iterrows():
        arch = row.get("arch") or {}
        layers = (row.get("policy") or {}).get("layers", {})
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


def dominating(front: pd.DataFrame, point: Mapping[str, Any], latency: str = "latency_ms") -> pd.DataFrame:
    """The rows of ``front`` at least as accurate and at least as fast (by ``latency``) as ``point``, and
    better in one: the sub-networks that make ``point`` (a baseline) obsolete on this profile.

    Whether the search beat the full model is the first question a report must answer, and the answer
    can differ between the latency estimate (what the search optimised) and the end-to-end measurement
    (``latency="measured_latency_ms"``), so callers ask for each. Rows or a point without that latency
    dominate nothing."""
    bound = point.get(latency)
    if latency not in front or bound is None or pd.isna(bound):
        return front.iloc[:0]
    accuracy, latencies = front["accuracy"], front[latency]
    at_least = (accuracy >= point["accuracy"]) & (latencies <= bound)
    better = (accuracy > point["accuracy"]) | (latencies < bound)
    return front[at_least & better]


def baseline_table(baselines: list[dict[str, Any]], front: pd.DataFrame | None = None) -> pd.DataFrame:
    """The full model per baseline precision: accuracy in %, both latencies, size; with ``front``, how
    many front members dominate it by the latency estimate and by the measurement."""
    rows = []
    for b in baselines:
        row = {
            "full model": b["precision"],
            "accuracy %": 100 * b["accuracy"],
            "latency ms (estimate)": b["latency_ms"],
            "latency ms (measured)": b.get("measured_latency_ms"),
            "size MB": b["size_mb"],
        }
        if front is not None:
            row["dominated by (estimate)"] = len(dominating(front, b))
            row["dominated by (measured)"] = len(dominating(front, b, "measured_latency_ms"))
        rows.append(row)
    return pd.DataFrame(rows)


def quality_table(quality: list[dict[str, Any]]) -> pd.DataFrame:
    """The predictors' quality per iteration: cross-validated, and on the batch they then proposed."""
    rows = []
    for entry in quality:
        for metric, q in entry.get("metrics", {}).items():
            cv, new = q.get("cv", {}), q.get("new_candidates") or {}
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
    results = load_results(search_dir)
    folder, history, baselines = results.folder, results.history, results.baselines
    quality, settings = results.predictor_quality, results.settings
    out = folder / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)

    plots = {
        "accuracy_vs_latency.png": png_bytes(plot_front(results, "latency_ms")),
        "accuracy_vs_size.png": png_bytes(plot_front(results, "size_mb")),
        "hypervolume.png": png_bytes(plot_hypervolume(results)),
    }
    for name, data in plots.items():
        _write_bytes(out / name, data)
    table = front_table(results.front)
    atomic_write(out / FRONT_CSV, lambda tmp: table.to_csv(tmp, index=False))

    baselines_frame = baseline_table(baselines, results.front)
    sections = [
        f"<h1>elastiq search: {html.escape(folder.name)}</h1>",
        f"<p>{len(history)} candidates really evaluated; method <b>{html.escape(str(settings.get('method', '?')))}</b>,"
        f" seed {settings.get('seed', '?')}, objectives {html.escape(str(settings.get('objectives', '?')))}.</p>",
        _img(plots["accuracy_vs_latency.png"], "accuracy vs latency"),
        _img(plots["accuracy_vs_size.png"], "accuracy vs size"),
        "<h2>Pareto front (really evaluated)</h2>",
        _table(table),
        "<h2>Baselines: the full model on the same profile</h2>",
        _table(baselines_frame) if len(baselines_frame) else "<p>none</p>",
        "<p>Dominated by: how many front members are at least as accurate and at least as fast as that baseline,"
        " and better in one.</p>",
        "<h2>Hypervolume vs evaluations</h2>",
        _img(plots["hypervolume.png"], "hypervolume"),
        "<h2>Predictor quality</h2>",
        _table(quality_table(quality)) if quality else "<p>no predictors (not the predictor method)</p>",
    ]
    if latency_validation:
        rows = pd.DataFrame(validation_rows(latency_validation)).rename(columns={"used": "used by the search"})
        sections += ["<h2>Latency model validation (profile)</h2>", _table(rows)]
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
