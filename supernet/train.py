"""elastiq's own InstaTune training loop: resumable, deterministic, with atomic checkpoints.

A run lives in one folder. Every ``checkpoint_every`` steps the loop writes ``checkpoint.pt``
(weights, optimizer, scheduler, step, dropout RNG state, resolved config) atomically; a killed run
started again on the same folder continues from there and, with the same seed, ends with exactly
the weights an uninterrupted run gets. What stays independent of the step counter is derived from
``(seed, step)``: the data order of each epoch and the sub-networks each step trains.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from supernet.arch import BertElasticSpace
from supernet.atomic import atomic_write
from supernet.bert import ElasticBertForSequenceClassification
from supernet.data import TextClassificationData, TokenizedBatch, make_batches, num_batches
from supernet.errors import ConfigError
from supernet.instatune import InstaTuneConfig, sandwich_step, step_archs, step_rng
from supernet.reorder import Criterion, compute_importance, reorder_by_importance

CHECKPOINT = "checkpoint.pt"
TRAIN_LOG = "train_log.jsonl"
# Keys that change only bookkeeping, not the weights a run ends with: a resume may change them.
_BOOKKEEPING = {"checkpoint_every", "log_every", "device"}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_length: int = 128
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    reorder: bool = True
    importance_criterion: Criterion = "taylor"
    importance_batches: int = 16
    device: str = "cpu"
    instatune: InstaTuneConfig = field(default_factory=InstaTuneConfig)

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "max_length",
            "checkpoint_every",
            "log_every",
            "importance_batches",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"train.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainConfig:
        data = dict(data or {})
        allowed = set(cls.__dataclass_fields__)
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError(f"unknown train keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "instatune" in data:
            data["instatune"] = InstaTuneConfig.from_dict(data["instatune"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"bad train config: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    steps: int
    resumed_from: int
    step_seconds: tuple[float, ...]
    run_dir: Path

    @property
    def median_step_seconds(self) -> float | None:
        """The median time of the steps this call ran; None when a resumed run had none left to run
        (training finished before an interruption), so that a recorded result never holds NaN."""
        return statistics.median(self.step_seconds) if self.step_seconds else None


StepCallback = Callable[[int, Mapping[str, float]], None]


def _batch_stream(
    data: TextClassificationData, tokenizer: PreTrainedTokenizerBase, config: TrainConfig, start_step: int
) -> Iterator[TokenizedBatch]:
    """Training batches from ``start_step`` on; epoch e is shuffled with seed (seed, e)."""
    per_epoch = num_batches(data.train, config.batch_size)
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        batches = make_batches(
            data.train,
            tokenizer,
            batch_size=config.batch_size,
            max_length=config.max_length,
            shuffle_seed=config.seed * 100_003 + epoch,
        )
        yield from itertools.islice(batches, offset, None)
        epoch, offset = epoch + 1, 0


def _to_device(batch: TokenizedBatch, device: torch.device) -> dict[str, torch.Tensor]:
    return {key: tensor.to(device) for key, tensor in cast(Mapping[str, torch.Tensor], batch).items()}


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights, as BERT fine-tuning does."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def _check_same_run(saved: Mapping[str, Any], config: TrainConfig, run_dir: Path) -> None:
    current = config.to_dict()
    # A checkpoint written before an option existed ran with its default: compare with defaults filled in,
    # for train options and the nested InstaTune ones alike.
    defaults = TrainConfig().to_dict()
    saved = {**defaults, **saved, "instatune": {**defaults["instatune"], **saved.get("instatune", {})}}
    for key in sorted(set(saved) | set(current)):
        if key not in _BOOKKEEPING and saved.get(key) != current.get(key):
            raise ConfigError(
                f"{run_dir} holds a run with {key}={saved.get(key)!r}, not {current.get(key)!r}; "
                "resume with the same config or use a new run folder"
            )


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _trim_log(log_path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not log_path.exists():
        return
    kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    atomic_write(log_path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))


def train_supernet(
    model: ElasticBertForSequenceClassification,
    space: BertElasticSpace,
    data: TextClassificationData,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    on_step_end: StepCallback | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place as a super-network over ``space`` (InstaTune), resuming if
    ``run_dir`` holds a checkpoint of the same run. ``on_step_end(step, losses)`` is called after
    each optimizer step (and after its checkpoint, if any)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = run_dir / CHECKPOINT, run_dir / TRAIN_LOG
    device = torch.device(config.device)
    model.to(device)
    optimizer = _optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * config.steps), config.steps)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        start = 0
        if ckpt_path.exists():
            state = torch.load(ckpt_path, map_location=device, weights_only=False)
            _check_same_run(state["config"], config, run_dir)
            # Checkpoints from before depth rules existed trained with "first".
            if state.get("depth_rule", "first") != model.shape.depth_rule:
                raise ConfigError(
                    f"{run_dir} holds a run with depth_rule={state.get('depth_rule', 'first')!r}, not "
                    f"{model.shape.depth_rule!r}; resume with the same model config or use a new run folder"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            start = int(state["step"])
            _trim_log(log_path, start)
        else:
            torch.manual_seed(config.seed)
            log_path.unlink(missing_ok=True)
            if config.reorder:
                importance_batches = make_batches(
                    data.train,
                    tokenizer,
                    batch_size=config.batch_size,
                    max_length=config.max_length,
                    shuffle_seed=config.seed,
                )
                moved = (_to_device(b, device) for b in importance_batches)
                scores = compute_importance(
                    model, moved, criterion=config.importance_criterion, max_batches=config.importance_batches
                )
                reorder_by_importance(model, scores)

        model.train()
        step_seconds: list[float] = []
        stream = _batch_stream(data, tokenizer, config, start)
        bar = tqdm(total=config.steps, initial=start, desc="instatune", disable=not progress)
        for step in range(start + 1, config.steps + 1):
            tic = time.perf_counter()
            batch = _to_device(next(stream), device)
            archs = step_archs(space, config.instatune, step_rng(config.seed, step))
            out = sandwich_step(model, batch, archs, config.instatune, backward=True)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_seconds.append(time.perf_counter() - tic)
            losses = {"loss_total": float(out.loss), "loss_largest": out.losses[0]}
            if step % config.log_every == 0 or step == config.steps:
                record = {
                    "step": step,
                    **losses,
                    "lr": scheduler.get_last_lr()[0],
                    "step_seconds": step_seconds[-1],
                }
                with log_path.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{out.losses[0]:.3f}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                _save_checkpoint(
                    ckpt_path,
                    {
                        "step": step,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "config": config.to_dict(),
                        "depth_rule": model.shape.depth_rule,
                    },
                )
            bar.update(1)
            if on_step_end is not None:
                on_step_end(step, losses)
        bar.close()
    return TrainResult(steps=config.steps, resumed_from=start, step_seconds=tuple(step_seconds), run_dir=run_dir)


def standard_finetuning(config: TrainConfig) -> TrainConfig:
    """The same loop as plain fine-tuning of one network: no sandwich, no reordering."""
    return replace(config, reorder=False, instatune=InstaTuneConfig(num_random=0, train_smallest=False))
