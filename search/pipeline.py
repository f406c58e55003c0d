"""Library functions behind the CLI: train a super-network for a run, evaluate its sub-networks,
extract one. Each writes its results into the run folder as it produces them (atomically)."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from hardware_profiles.endtoend import MAX_SECONDS, measure_subnetwork
from hardware_profiles.errors import ProfileError
from hardware_profiles.hardware import check_measurable
from hardware_profiles.profiling import ProfileRun, find_latency_model, profile_target
from hardware_profiles.registry import get_profile
from quant.policy import QuantPolicy
from search.config import RunConfig, load_run_config
from search.results import SUPERNET_DIR
from search.search_config import SearchConfig
from supernet.arch import BertArch, BertElasticSpace
from supernet.atomic import atomic_write_text
from supernet.bert import ElasticBertForSequenceClassification, count_parameters
from supernet.checkpoint import (
    default_checkpoint_dir,
    load_model,
    load_pretrained,
    load_space,
    load_tokenizer,
    save_model,
)
from supernet.data import TextClassificationData, load_dataset_config
from supernet.errors import ArchError, ConfigError
from supernet.evaluate import evaluate
from supernet.extract import extract
from supernet.train import train_supernet

RESOLVED_CONFIG = "config.resolved.yaml"
EVALUATION = "evaluation.json"


@dataclass(frozen=True)
class RunArtifacts:
    run_dir: Path
    supernet_dir: Path
    evaluation: list[dict[str, Any]]
    search_dir: Path | None = None
    report: Path | None = None
    exported: list[dict[str, Any]] | None = None


def _checkpoint_dir(config: RunConfig) -> Path:
    return default_checkpoint_dir() if config.checkpoint == "default" else Path(config.checkpoint)


def _load_data(config: RunConfig) -> TextClassificationData:
    return load_dataset_config(config.data, seed=config.seed)


def train_run(config: RunConfig, *, progress: bool = True) -> Path:
    """Fine-tune the run's super-network (resuming if the folder holds a checkpoint) and save it,
    with its tokenizer and elastic space, as ``<run_dir>/supernet``."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RESOLVED_CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))
    data = _load_data(config)
    checkpoint = _checkpoint_dir(config)
    model = load_pretrained(
        checkpoint,
        num_labels=data.num_classes,
        seed=config.seed,
        reinit_classifier=config.reinit_classifier,
        pooling=config.pooling,
        depth_rule=config.depth_rule,
    )
    tokenizer = load_tokenizer(checkpoint)
    shape = model.shape
    space = BertElasticSpace.default(shape.num_layers, shape.heads[0], shape.ffn[0]).with_choices(config.space)
    train_supernet(model, space, data, tokenizer, config.train, run_dir / "training", progress=progress)
    out = run_dir / SUPERNET_DIR
    save_model(model, out, space=space, extra={"label_names": list(data.label_names)})
    tokenizer.save_pretrained(out)
    return out


def resolve_archs(
    specs: Sequence[Any], space: BertElasticSpace, *, num_random: int = 0, seed: int = 0
) -> list[tuple[str, BertArch]]:
    """Named architectures from config entries: 'largest', 'smallest', a {heads, ffn} mapping (or its
    JSON text), plus ``num_random`` sampled with ``seed``; each is checked against the space."""
    named: list[tuple[str, BertArch]] = []
    for spec in specs:
        if spec == "largest":
            named.append(("largest", space.largest()))
        elif spec == "smallest":
            named.append(("smallest", space.smallest()))
        else:
            if isinstance(spec, str):
                try:
                    spec = json.loads(spec)
                except json.JSONDecodeError:
                    raise ArchError(
                        f"cannot read architecture {spec!r}; use 'largest', 'smallest' or JSON like "
                        '\'{"heads": [12, 6], "ffn": [1536, 768]}\''
                    ) from None
            if not isinstance(spec, dict):
                raise ArchError(f"an architecture is 'largest', 'smallest' or a {{heads, ffn}} mapping, got {spec!r}")
            arch = space.validate(BertArch.from_dict(spec))
            named.append((f"custom{len(named)}", arch))
    rng = np.random.default_rng(seed)
    named.extend((f"random{i}", space.sample(rng)) for i in range(num_random))
    return named


def evaluate_run(
    run_dir: str | Path,
    archs: Sequence[Any],
    *,
    split: str = "test",
    num_random: int = 0,
    batch_size: int = 128,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate sub-networks of a trained run on one split; rows are written to
    ``<run_dir>/evaluation.json`` as each one finishes, so an interrupted evaluation keeps its rows."""
    run_dir = Path(run_dir)
    if not (run_dir / RESOLVED_CONFIG).exists():
        raise ConfigError(f"{run_dir} has no {RESOLVED_CONFIG}; train the run first (elastiq train)")
    config = load_run_config(run_dir / RESOLVED_CONFIG)
    supernet_dir = run_dir / SUPERNET_DIR
    model = load_model(supernet_dir)
    space = load_space(supernet_dir)
    tokenizer = load_tokenizer(supernet_dir)
    data = _load_data(config)
    rows: list[dict[str, Any]] = []
    for name, arch in resolve_archs(archs, space, num_random=num_random, seed=config.seed):
        result = evaluate(
            model,
            getattr(data, split),
            tokenizer,
            arch=arch,
            batch_size=batch_size,
            max_length=config.train.max_length,
            progress=progress,
            desc=f"evaluate {name}",
        )
        rows.append(
            {
                "name": name,
                "arch": arch.to_dict(),
                "params": count_parameters(model.shape, arch),
                "split": split,
                **result.to_dict(),
            }
        )
        atomic_write_text(run_dir / EVALUATION, json.dumps(rows, indent=2))
    return rows


def extract_run(run_dir: str | Path, arch_spec: Any, out: str | Path) -> Path:
    """Save sub-network ``arch_spec`` of a trained run as a standalone model folder (with tokenizer)."""
    supernet_dir = Path(run_dir) / SUPERNET_DIR
    model: ElasticBertForSequenceClassification = load_model(supernet_dir)
    ((_, arch),) = resolve_archs([arch_spec], load_space(supernet_dir))
    sub = extract(model, arch)
    out = Path(out)
    save_model(sub, out, extra={"arch": arch.to_dict(), "source": str(supernet_dir.resolve())})
    load_tokenizer(supernet_dir).save_pretrained(out)
    return out


def report_run(run_dir: str | Path, profile: str) -> Path:
    """Write the HTML report (and its plots and front CSV) of the run's search for ``profile``."""
    from search.report import write_report
    from search.search_run import search_folder

    folder = search_folder(run_dir, profile)
    try:
        validation = find_latency_model(profile, [Path(run_dir) / "profiles"]).validation
    except ProfileError:
        validation = None
    return write_report(folder, latency_validation=validation)


def with_search_profile(config: RunConfig, profile: str | None) -> RunConfig:
    """``config`` searching for ``profile`` (the config's own search settings, or the defaults)."""
    search = config.search or SearchConfig()
    return replace(config, search=replace(search, profile=profile) if profile else search)


def export_run_dir(
    run_dir: str | Path,
    profile: str,
    out: str | Path | None = None,
    *,
    ranks: Sequence[int] | None = None,
    rules: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Export chosen front members of the run's search for ``profile`` (see ``search.export``)."""
    from search.export import export_run
    from search.search_run import load_context

    run_dir = Path(run_dir)
    if not (run_dir / RESOLVED_CONFIG).is_file():
        raise ConfigError(f"{run_dir} has no {RESOLVED_CONFIG}; train and search the run first")
    config = with_search_profile(load_run_config(run_dir / RESOLVED_CONFIG), profile)
    context = load_context(config)
    target = Path(out) if out is not None else run_dir / "exported" / profile
    return export_run(context, target, ranks=list(ranks or []), rules=list(rules or []))


def run_pipeline(config: RunConfig, *, progress: bool = True) -> RunArtifacts:
    """The main job: fine-tune the super-network, evaluate a few sub-networks, search the joint space for
    the configured profile, write the report, and export the chosen front members."""
    from search.export import export_run
    from search.search_run import search_run

    supernet_dir = train_run(config, progress=progress)
    rows = evaluate_run(
        config.run_dir,
        config.evaluate.archs,
        split=config.evaluate.split,
        num_random=config.evaluate.num_random,
        batch_size=config.evaluate.batch_size,
        progress=progress,
    )
    if config.search is None:
        return RunArtifacts(run_dir=config.run_dir, supernet_dir=supernet_dir, evaluation=rows)
    search = search_run(config, progress=progress)
    report = report_run(config.run_dir, config.search.profile)
    cards = export_run(
        search.context,
        config.run_dir / "exported" / config.search.profile,
        rules=list(config.search.export),
        strict=False,
    )
    return RunArtifacts(
        run_dir=config.run_dir,
        supernet_dir=supernet_dir,
        evaluation=rows,
        search_dir=search.folder,
        report=report,
        exported=cards,
    )


def load_for_profiling(
    checkpoint: str | Path, num_labels: int = 2
) -> tuple[ElasticBertForSequenceClassification, BertElasticSpace]:
    """A model and its elastic space for latency profiling: an elastiq super-network folder as saved
    (its own space), or a pretrained checkpoint folder ('default': the embedded MiniLM) with the default
    space. Latency depends on shapes only, so untrained weights measure the same as trained ones."""
    folder = default_checkpoint_dir() if str(checkpoint) == "default" else Path(checkpoint)
    if (folder / "elastiq_config.json").is_file():
        return load_model(folder), load_space(folder)
    model = load_pretrained(folder, num_labels=num_labels, seed=0)
    shape = model.shape
    return model, BertElasticSpace.default(shape.num_layers, shape.heads[0], shape.ffn[0])


def profile_run(
    profile_name: str,
    *,
    profile_dirs: Sequence[str | Path] = (),
    checkpoint: str | Path = "default",
    out: str | Path = "runs/profiles",
    n_validation: int = 30,
    seed: int = 0,
    rounds: int = 1,
    max_seconds: float | None = MAX_SECONDS,
    progress: bool = True,
) -> ProfileRun:
    """``elastiq profile``: measure the latency table of a profile, validate and calibrate it (resumable)."""
    profile = get_profile(profile_name, profile_dirs)
    check_measurable(profile)
    model, space = load_for_profiling(checkpoint)
    report = (lambda line: tqdm.write(line, file=sys.stderr)) if progress else None
    return profile_target(
        model.eval(),
        space,
        profile,
        out,
        n_validation=n_validation,
        seed=seed,
        rounds=rounds,
        max_seconds=max_seconds,
        progress=report,
    )


def measure_run(
    profile_name: str,
    arch_spec: Any,
    policy_file: str | Path | None,
    *,
    profile_dirs: Sequence[str | Path] = (),
    checkpoint: str | Path = "default",
    tables_dir: str | Path = "runs/profiles",
) -> dict[str, Any]:
    """``elastiq profile --arch``: the real latency of one (arch, policy) under a profile, and the
    profile's estimate for it when a latency table is available (in ``tables_dir`` or shipped)."""
    profile = get_profile(profile_name, profile_dirs)
    model, space = load_for_profiling(checkpoint)
    ((_, arch),) = resolve_archs([arch_spec], space)
    policy = QuantPolicy()
    if policy_file is not None:
        path = Path(policy_file)
        if not path.is_file():
            raise ConfigError(f"policy file {path} does not exist; give a JSON policy (quant.QuantPolicy.to_json)")
        policy = QuantPolicy.from_json(path.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="elastiq-onnx-") as scratch:
        stats = measure_subnetwork(model.eval(), arch, policy, profile, scratch)
    result: dict[str, Any] = {"profile": profile.name, "arch": arch.to_dict(), "measured": stats.to_dict()}
    try:
        result["estimated_ms"] = find_latency_model(profile.name, [tables_dir]).predict_ms(model.shape, arch, policy)
    except ProfileError as exc:
        result["estimated_ms"] = None
        result["estimate_unavailable"] = str(exc)
    return result
