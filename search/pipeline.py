"""Library functions behind the CLI: train a super-network for a run, evaluate its sub-networks,
extract one. Each writes its results into the run folder as it produces them (atomically)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from search.config import RunConfig, load_run_config
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
SUPERNET_DIR = "supernet"
EVALUATION = "evaluation.json"


@dataclass(frozen=True)
class RunArtifacts:
    run_dir: Path
    supernet_dir: Path
    evaluation: list[dict[str, Any]]


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


def run_pipeline(config: RunConfig, *, progress: bool = True) -> RunArtifacts:
    """What exists of the main job today: fine-tune the super-network, then evaluate sub-networks."""
    supernet_dir = train_run(config, progress=progress)
    rows = evaluate_run(
        config.run_dir,
        config.evaluate.archs,
        split=config.evaluate.split,
        num_random=config.evaluate.num_random,
        batch_size=config.evaluate.batch_size,
        progress=progress,
    )
    return RunArtifacts(run_dir=config.run_dir, supernet_dir=supernet_dir, evaluation=rows)
