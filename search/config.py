"""The run configuration: one YAML file describes a whole run, and its resolved form is saved with
the results so that every number can be traced to the exact settings that produced it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from search.search_config import SearchConfig
from supernet.bert import DEPTH_RULES
from supernet.errors import ConfigError
from supernet.train import TrainConfig

_TOP_LEVEL = {"run_dir", "seed", "model", "data", "space", "train", "evaluate", "search"}
_MODEL_KEYS = {"checkpoint", "reinit_classifier", "pooling", "depth_rule"}
_EVAL_KEYS = {"split", "archs", "num_random", "batch_size"}


@dataclass(frozen=True)
class EvaluateConfig:
    """Which sub-networks a run evaluates once trained: named ones ('largest', 'smallest'), explicit
    ``{heads: [...], ffn: [...]}`` mappings, and ``num_random`` drawn with the run's seed."""

    split: str = "test"
    archs: tuple[Any, ...] = ("largest", "smallest")
    num_random: int = 3
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.split not in ("train", "validation", "test"):
            raise ConfigError(f"evaluate.split must be train, validation or test, got {self.split!r}")
        if self.num_random < 0:
            raise ConfigError(f"evaluate.num_random must be >= 0, got {self.num_random}")


@dataclass(frozen=True)
class RunConfig:
    run_dir: Path = Path("runs/default")
    seed: int = 0
    checkpoint: str = "default"
    reinit_classifier: bool = False
    pooling: str = "auto"
    depth_rule: str = "first"
    data: Mapping[str, Any] | None = None
    space: Mapping[str, Any] | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    search: SearchConfig | None = None  # the whole-pipeline run searches only when configured

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "seed": self.seed,
            "model": {
                "checkpoint": self.checkpoint,
                "reinit_classifier": self.reinit_classifier,
                "pooling": self.pooling,
                "depth_rule": self.depth_rule,
            },
            "data": dict(self.data) if self.data else {"name": "rotten_tomatoes"},
            "space": dict(self.space) if self.space else {},
            "train": {k: v for k, v in self.train.to_dict().items() if k != "seed"},  # the top-level seed
            "evaluate": {**self.evaluate.__dict__, "archs": list(self.evaluate.archs)},
            **({"search": self.search.to_dict()} if self.search is not None else {}),
        }


def _section(data: Mapping[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config section '{name}' must be a mapping, got {type(value).__name__}")
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"unknown {name} keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return dict(value)


def parse_run_config(data: Mapping[str, Any], *, run_dir: str | Path | None = None) -> RunConfig:
    """Validate a config mapping (as read from YAML); ``run_dir`` overrides the file's."""
    if not isinstance(data, Mapping):
        raise ConfigError("a run config must be a YAML mapping at the top level")
    unknown = set(data) - _TOP_LEVEL
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL)}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    model = _section(data, "model", _MODEL_KEYS)
    if model.get("depth_rule", "first") not in DEPTH_RULES:
        raise ConfigError(f"unknown model.depth_rule {model['depth_rule']!r}; use one of {', '.join(DEPTH_RULES)}")
    train_data = _section(data, "train", set(TrainConfig.__dataclass_fields__))
    if "seed" in train_data:
        raise ConfigError("set the seed once, at the top level of the config, not under train")
    evaluate = _section(data, "evaluate", _EVAL_KEYS)
    try:
        evaluate_config = EvaluateConfig(**{**evaluate, "archs": tuple(evaluate.get("archs", ("largest", "smallest")))})
    except TypeError as exc:
        raise ConfigError(f"bad evaluate config: {exc}") from None
    return RunConfig(
        run_dir=Path(run_dir if run_dir is not None else data.get("run_dir", "runs/default")),
        seed=seed,
        checkpoint=str(model.get("checkpoint", "default")),
        reinit_classifier=bool(model.get("reinit_classifier", False)),
        pooling=str(model.get("pooling", "auto")),
        depth_rule=str(model.get("depth_rule", "first")),
        data=data.get("data"),
        space=data.get("space"),
        train=replace(TrainConfig.from_dict(train_data), seed=seed),
        evaluate=evaluate_config,
        search=(
            SearchConfig.from_dict(_section(data, "search", set(SearchConfig.__dataclass_fields__)))
            if data.get("search") is not None
            else None
        ),
    )


def load_run_config(path: str | Path, *, run_dir: str | Path | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML run config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} is not valid YAML ({first}); fix the file") from None
    return parse_run_config(data, run_dir=run_dir)
