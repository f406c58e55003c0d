"""``elastiq search``: the joint architecture x quantization search of a trained run, for one profile.

Writes into ``<run_dir>/search/<profile>/``:

* ``evaluations.csv`` (+ ``search.json``, ``predictor_quality.json``): every real evaluation, as it
  happens (``search.store``); a killed search resumes without re-evaluating anything;
* ``optuna.db``: the ``optuna`` method's study (unless ``search.storage`` puts it elsewhere), for
  ``optuna-dashboard sqlite:///<folder>/optuna.db`` or ``optuna.load_study(study_name="elastiq", ...)``;
* ``front.csv``: the really evaluated Pareto front;
* ``front_measured.csv``: the front re-measured end to end on this machine (when it can measure the
  profile), beside the latency estimate the search used;
* ``baselines.json``: the full model in fp32, bf16 and int8_static (those the profile supports),
  evaluated and measured the same way, so that reports can mark them;
* ``hypervolume.json``: hypervolume after each evaluated batch.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hardware_profiles.endtoend import measure_subnetwork
from hardware_profiles.errors import ProfileError
from hardware_profiles.hardware import check_measurable
from hardware_profiles.latency_model import LatencyModel, accuracy_metrics
from hardware_profiles.profile import HardwareProfile
from hardware_profiles.profiling import find_latency_model, profile_target
from hardware_profiles.registry import get_profile
from quant.policy import QuantPolicy, uniform_policy
from search.bert_evaluation import METRICS, BertEvaluator
from search.bert_space import BertJointSpace
from search.config import RunConfig
from search.engine import SearchResult, run_search
from search.results import BASELINES_JSON, FRONT_CSV, FRONT_MEASURED_CSV, HYPERVOLUME_JSON, SEARCH_DIR, SUPERNET_DIR
from search.store import ResultsStore
from supernet.arch import BertArch, BertElasticSpace
from supernet.atomic import atomic_write, atomic_write_text
from supernet.bert import ElasticBertForSequenceClassification
from supernet.checkpoint import load_model, load_space, load_tokenizer
from supernet.data import TextSplit, load_dataset_config, make_batches
from supernet.errors import ConfigError

BASELINE_PRECISIONS = ("fp32", "bf16", "int8_static")


@dataclass
class SearchContext:
    """Everything a search, its baselines and its exports evaluate with, loaded once from a run folder."""

    config: RunConfig
    profile: HardwareProfile
    latency: LatencyModel
    evaluator: BertEvaluator
    folder: Path

    @property
    def space(self) -> BertJointSpace:
        return self.evaluator.space


def _latency_model(
    config: RunConfig, profile: HardwareProfile, model: ElasticBertForSequenceClassification, space: BertElasticSpace
) -> LatencyModel:
    """The profile's latency model for this model: from ``search.tables``, the run's own ``profiles/``, or
    the shipped tables; when none fits this model and this machine can measure the profile, it is
    measured now into ``<run_dir>/profiles`` (``elastiq profile``), once."""
    assert config.search is not None
    tables = [config.search.tables] if config.search.tables else []
    own = config.run_dir / "profiles"
    try:
        latency = find_latency_model(profile.name, [*tables, own])
        latency.table.check_shape(model.shape)
        latency.table.estimate_ms(model.shape, space.largest())
        latency.table.estimate_ms(model.shape, space.smallest())
        return latency
    except ProfileError as missing:
        try:
            check_measurable(profile)
        except ProfileError:
            raise missing from None
    run = profile_target(model, space, profile, own, n_validation=config.search.profile_validation, seed=config.seed)
    return run.model


@dataclass(frozen=True)
class SearchArtifacts:
    folder: Path
    result: SearchResult
    front_measured: pd.DataFrame | None
    baselines: list[dict[str, Any]]
    context: SearchContext


def search_folder(run_dir: str | Path, profile: str) -> Path:
    return Path(run_dir) / SEARCH_DIR / profile


def load_context(config: RunConfig) -> SearchContext:
    """Load the trained super-network, data subset, calibration batches, profile and latency model."""
    cfg = config.search
    if cfg is None:
        raise ConfigError("the run config has no search: section; add one (see examples/demo.yaml)")
    supernet_dir = config.run_dir / SUPERNET_DIR
    if not (supernet_dir / "elastiq_config.json").is_file():
        raise ConfigError(f"{config.run_dir} has no trained super-network; run `elastiq train` first")
    profile = get_profile(cfg.profile, cfg.profile_dirs)
    precisions = cfg.precisions or profile.precisions
    unsupported = [p for p in precisions if p not in profile.precisions]
    if unsupported:
        raise ConfigError(
            f"search.precisions {unsupported} are not supported by profile {profile.name} "
            f"(it supports {', '.join(profile.precisions)}); remove them"
        )
    model = load_model(supernet_dir).eval()
    elastic = load_space(supernet_dir)
    latency = _latency_model(config, profile, model, elastic)
    tokenizer = load_tokenizer(supernet_dir)
    data = load_dataset_config(config.data, seed=config.seed)
    n = min(cfg.validation_examples, len(data.validation))
    subset = TextSplit(data.validation.texts[:n], data.validation.labels[:n])
    max_length = config.train.max_length
    batches = make_batches(data.train, tokenizer, batch_size=32, max_length=max_length)
    calibration = [b for _, b in zip(range(cfg.calibration_batches), batches, strict=False)]
    space = BertJointSpace(model.shape, elastic, precisions, seq_len=profile.sequence_length)
    evaluator = BertEvaluator(
        model, space, tokenizer, subset, latency, calibration, profile.sequence_length, max_length=max_length
    )
    return SearchContext(config, profile, latency, evaluator, search_folder(config.run_dir, profile.name))


def _save_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _measure(context: SearchContext, arch: BertArch, policy: QuantPolicy) -> float | None:
    """Real latency (median ms) of one candidate, or None when this machine cannot measure the profile."""
    try:
        check_measurable(context.profile)
    except ProfileError:
        return None
    model = context.evaluator.model
    with tempfile.TemporaryDirectory(prefix="elastiq-") as scratch:
        calibration = list(context.evaluator.calibration)[:1]
        return measure_subnetwork(model, arch, policy, context.profile, scratch, calibration=calibration).median_ms


def remeasure_front(context: SearchContext, front: pd.DataFrame, *, progress: bool = True) -> pd.DataFrame | None:
    """Measure every front member end to end (resuming ``front_measured.csv``); None if not measurable here."""
    try:
        check_measurable(context.profile)
    except ProfileError:
        return None
    path = context.folder / FRONT_MEASURED_CSV
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["key", "measured_latency_ms"])
    measured = dict(zip(done["key"], done["measured_latency_ms"], strict=True))
    rows = []
    for key in tqdm(list(front["key"]), desc="re-measure front", disable=not progress, leave=False):
        if key not in measured:
            arch, policy = context.space.decode(context.space.from_key(key))
            measured[key] = _measure(context, arch, policy)
            rows = [{"key": k, "measured_latency_ms": v} for k, v in measured.items()]
            _save_csv(path, pd.DataFrame(rows))
    table = front.merge(pd.DataFrame([{"key": k, "measured_latency_ms": v} for k, v in measured.items()]), on="key")
    _save_csv(path, table)
    return table


def evaluate_baselines(
    context: SearchContext, *, history: pd.DataFrame | None = None, measured: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """The full model in each baseline precision the profile supports, evaluated like a candidate and
    measured end to end (cached in ``baselines.json``).

    A baseline the search already evaluated (``start_from_full_model`` puts the full model in each of the
    space's precisions in its first population) is taken from ``history`` instead of being evaluated
    again, and its end-to-end latency from ``measured`` (the front's re-measurement) when it is on the
    front: the same evaluator on the same data gives the same numbers, and the time is better spent on
    the search."""
    path = context.folder / BASELINES_JSON
    stored = {b["precision"]: b for b in json.loads(path.read_text())} if path.is_file() else {}
    model = context.evaluator.model
    arch = context.space.space.largest()
    out = []
    for precision in BASELINE_PRECISIONS:
        if precision not in context.profile.precisions:
            continue
        if precision not in stored:
            policy = uniform_policy(model, precision)
            metrics, latency = _already_evaluated(context, precision, history, measured)
            if metrics is None:
                metrics = context.evaluator.evaluate_candidate(arch, policy)
            stored[precision] = {
                "precision": precision,
                "arch": arch.to_dict(),
                **metrics,
                "measured_latency_ms": _measure(context, arch, policy) if latency is None else latency,
            }
            atomic_write_text(path, json.dumps(list(stored.values()), indent=2))
        out.append(stored[precision])
    return out


def _already_evaluated(
    context: SearchContext, precision: str, history: pd.DataFrame | None, measured: pd.DataFrame | None
) -> tuple[dict[str, float] | None, float | None]:
    """The search's metrics and re-measured latency of the full model in ``precision``, where it has them."""
    space = context.space
    if history is None or precision not in space.precisions:
        return None, None
    key = space.keys(space.uniform(space.space.largest(), precision)[None, :])[0]
    rows = history[history["key"] == key]
    if rows.empty:
        return None, None
    metrics = {name: float(rows.iloc[0][name]) for name in METRICS}
    if measured is None:
        return metrics, None
    hits = measured.loc[measured["key"] == key, "measured_latency_ms"].dropna()
    return metrics, float(hits.iloc[0]) if len(hits) else None


def configured_search(
    context: SearchContext, store: ResultsStore, *, method: str | None = None, progress: bool = True
) -> SearchResult:
    """Run (or resume) the config's search into ``store``; ``method`` overrides the config's, so that
    benchmarks compare methods on one loaded context with everything else equal."""
    cfg = context.config.search
    assert cfg is not None  # load_context checked it
    space, evaluator = context.space, context.evaluator
    initial = (
        np.array([space.uniform(space.space.largest(), p) for p in space.precisions])
        if cfg.start_from_full_model
        else None
    )
    return run_search(
        space,
        evaluator,
        cfg.objectives,
        method=method or cfg.method,  # type: ignore[arg-type]
        budget=cfg.budget,
        population=cfg.population,
        seed=context.config.seed,
        constraints=cfg.constraints,
        exact_metrics=evaluator.exact_metrics,
        store=store,
        inner_generations=cfg.inner_generations,
        proposal=cfg.proposal,  # type: ignore[arg-type]
        progress=progress,
        initial=initial,
        storage=cfg.storage,  # the optuna method's study (the config allows it only there)
    )


def search_run(config: RunConfig, *, progress: bool = True) -> SearchArtifacts:
    """Run (or resume) the configured search, then write the front, its re-measurement and baselines."""
    context = load_context(config)
    cfg = context.config.search
    assert cfg is not None  # load_context checked it
    folder = context.folder
    folder.mkdir(parents=True, exist_ok=True)
    result = configured_search(context, ResultsStore(folder), progress=progress)
    _save_csv(folder / FRONT_CSV, result.front)
    atomic_write_text(folder / HYPERVOLUME_JSON, json.dumps(result.hypervolume))
    measured = remeasure_front(context, result.front, progress=progress) if cfg.remeasure_front else None
    if measured is not None and len(measured) >= 2 and measured["measured_latency_ms"].notna().all():
        quality = accuracy_metrics(measured["measured_latency_ms"].to_numpy(), measured["latency_ms"].to_numpy())
        atomic_write_text(folder / "front_latency_check.json", json.dumps(quality, indent=2))
    baselines = evaluate_baselines(context, history=result.history, measured=measured)
    return SearchArtifacts(folder, result, measured, baselines, context)
