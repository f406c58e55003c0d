"""A search's results folder: its file names and one loader for everything in it.

Kept free of torch and the model code on purpose: reading and plotting a finished search (the report,
a notebook, a dashboard) should not pay for importing the machinery that produced it.

``<run_dir>/search/<profile>/`` holds ``evaluations.csv`` (every real evaluation, ``search.store``),
``search.json`` (the settings), ``front.csv`` (the really evaluated Pareto front),
``front_measured.csv`` (the front re-measured on the device, when it could be), ``baselines.json`` (the
full model per baseline precision), ``hypervolume.json`` and, for the predictor method,
``predictor_quality.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from supernet.errors import ConfigError

SUPERNET_DIR = "supernet"
SEARCH_DIR = "search"
EVALUATIONS_CSV = "evaluations.csv"
FRONT_CSV = "front.csv"
FRONT_MEASURED_CSV = "front_measured.csv"
BASELINES_JSON = "baselines.json"
HYPERVOLUME_JSON = "hypervolume.json"
QUALITY_JSON = "predictor_quality.json"
SETTINGS_JSON = "search.json"


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def load_front(folder: str | Path) -> pd.DataFrame:
    """The front, with ``measured_latency_ms`` when it was re-measured on the device."""
    folder = Path(folder)
    path = folder / FRONT_MEASURED_CSV if (folder / FRONT_MEASURED_CSV).is_file() else folder / FRONT_CSV
    if not path.is_file():
        raise ConfigError(f"{folder} has no Pareto front ({FRONT_CSV}); run `elastiq search` first")
    return pd.read_csv(path)


@dataclass(frozen=True)
class SearchResults:
    """Everything one finished (or interrupted) search wrote, as plain pandas/JSON values.

    ``front`` is the re-measured front when it exists; ``arch`` and ``policy`` of each row are decoded
    from its ``description`` JSON into columns of their own, so nobody has to parse them by hand.
    """

    folder: Path
    history: pd.DataFrame
    front: pd.DataFrame
    baselines: list[dict[str, Any]]
    hypervolume: list[list[float]]
    predictor_quality: list[dict[str, Any]]
    settings: dict[str, Any]

    @property
    def measured(self) -> bool:
        """Whether the front's latencies were re-measured on the device."""
        return "measured_latency_ms" in self.front and bool(self.front["measured_latency_ms"].notna().any())


def _with_decoded(frame: pd.DataFrame) -> pd.DataFrame:
    if "description" not in frame or frame.empty:
        return frame
    described = [json.loads(d) if isinstance(d, str) else {} for d in frame["description"]]
    out = frame.copy()
    out["arch"] = [d.get("arch") for d in described]
    out["policy"] = [d.get("policy") for d in described]
    return out


def load_results(search_dir: str | Path) -> SearchResults:
    """Read a search folder (``<run_dir>/search/<profile>``); a clear error if no search wrote it."""
    folder = Path(search_dir)
    evaluations = folder / EVALUATIONS_CSV
    if not evaluations.is_file():
        raise ConfigError(f"{folder} holds no search results ({EVALUATIONS_CSV}); run `elastiq search` first")
    history = pd.read_csv(evaluations)
    front = load_front(folder) if (folder / FRONT_CSV).is_file() else history.iloc[:0]
    return SearchResults(
        folder=folder,
        history=_with_decoded(history),
        front=_with_decoded(front),
        baselines=_read_json(folder / BASELINES_JSON, []),
        hypervolume=_read_json(folder / HYPERVOLUME_JSON, []),
        predictor_quality=_read_json(folder / QUALITY_JSON, []),
        settings=_read_json(folder / SETTINGS_JSON, {}),
    )
