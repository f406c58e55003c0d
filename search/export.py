"""``elastiq export``: chosen front members as standalone deployable models, each checked after export.

Per chosen candidate, ``<out>/<name>/`` holds:

* ``model.pt2``: the quantized sub-network as a ``torch.export`` program (``torch.export.load(path)
  .module()(input_ids, attention_mask, token_type_ids)`` -> logits), with batch and sequence dynamic;
  torchao's tensor subclasses are unwrapped into plain tensors first, so plain torch loads it;
* ``model.onnx`` when every precision of the policy exports to ONNX (fp32, int8_dynamic via ONNX
  Runtime's own quantization);
* ``model.safetensors`` + ``elastiq_config.json`` + ``policy.json``: the float sub-network and its
  policy, for re-quantizing or fine-tuning (loads with ``supernet.checkpoint.load_model``);
* the tokenizer files, and ``model_card.json``: arch, policy, profile, the metrics the search recorded
  and the same metrics re-computed on the exported ``model.pt2`` (accuracy on the search's validation
  subset, latency measured under the profile), with ``check_passed``.

Candidates are chosen by rank on the front (0 = best on the first objective) or by a rule such as
``fastest: accuracy >= 0.8`` (also ``smallest``, ``most_accurate``, with any ``metric >= / <= x``).
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from hardware_profiles.endtoend import INPUT_NAMES
from hardware_profiles.errors import ProfileError
from hardware_profiles.hardware import check_measurable
from hardware_profiles.onnx_runner import export_onnx
from hardware_profiles.runtimes import torch_runner
from hardware_profiles.timing import pinned_threads, time_runner
from quant.apply import apply_policy
from search.results import SUPERNET_DIR, load_front
from search.search_run import SearchContext
from supernet.atomic import atomic_write, atomic_write_text
from supernet.checkpoint import read_elastiq_config, save_model
from supernet.errors import ConfigError
from supernet.evaluate import evaluate
from supernet.extract import extract

log = logging.getLogger(__name__)
_RULE = re.compile(r"^\s*(fastest|smallest|most_accurate)\s*(?::\s*(.*))?$")
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")
_SORT = {"fastest": ("latency_ms", True), "smallest": ("size_mb", True), "most_accurate": ("accuracy", False)}
#: Accuracy of the reloaded program may differ from the search's record by float reordering only.
ACCURACY_TOLERANCE = 0.005
#: Latency re-measured on the exported program vs the search's record (a fresh compile, same protocol):
#: relative, with an absolute floor, because an exported program run eagerly adds a fixed Python
#: overhead (graph interpretation, unwrapped-parameter reassembly: ~0.4 ms measured) that only matters
#: for sub-millisecond models.
LATENCY_TOLERANCE = 0.25
LATENCY_FLOOR_MS = 0.5
ONNX_PRECISIONS = frozenset({"fp32", "int8_dynamic"})


def choose(front: pd.DataFrame, *, rank: int | None = None, rule: str | None = None) -> pd.Series:
    """The front member at ``rank`` (order of ``front.csv``) or the one a ``rule`` picks."""
    if (rank is None) == (rule is None):
        raise ConfigError("choose a sub-network by --rank N or by --rule 'fastest: accuracy >= 0.8', not both")
    if rank is not None:
        if not 0 <= rank < len(front):
            raise ConfigError(f"rank {rank} is outside the front's 0..{len(front) - 1}")
        return front.iloc[rank]
    match = _RULE.match(str(rule))
    if match is None:
        raise ConfigError(f"cannot read rule {rule!r}; write e.g. 'fastest: accuracy >= 0.8' or 'smallest'")
    goal, conditions = match.groups()
    chosen = front
    for condition in filter(None, (c.strip() for c in (conditions or "").split(","))):
        parsed = _CONDITION.match(condition)
        if parsed is None or parsed.group(1) not in front.columns:
            raise ConfigError(f"cannot read condition {condition!r}; write 'metric >= number' with a front column")
        metric, op, bound = parsed.groups()
        chosen = chosen[chosen[metric] >= float(bound)] if op == ">=" else chosen[chosen[metric] <= float(bound)]
    if chosen.empty:
        raise ConfigError(f"no front member satisfies {rule!r}; relax the condition")
    metric, ascending = _SORT[goal]
    return chosen.sort_values(metric, ascending=ascending).iloc[0]


def _unwrapped(model: nn.Module) -> nn.Module:
    """torchao tensor subclasses -> plain tensors + parametrizations, so torch.export writes plain torch."""
    from torchao.utils import unwrap_tensor_subclass

    return unwrap_tensor_subclass(model)


def _export_pt2(quantized: nn.Module, example: tuple[torch.Tensor, ...], path: Path, max_positions: int) -> None:
    from torch.export import Dim

    batch, seq = Dim("batch", min=1, max=4096), Dim("seq", min=2, max=max_positions)
    dynamic = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
    with torch.no_grad():
        program = torch.export.export(_unwrapped(quantized), example, dynamic_shapes=dynamic, strict=False)
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; the file is written atomically
    torch.export.save(program, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


class _Program(nn.Module):
    """A loaded ``torch.export`` program behind the ``nn.Module`` interface evaluation code expects: the
    program's module refuses ``eval()`` (it was traced in eval mode already) and has no parameters."""

    def __init__(self, program_module: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_program", program_module)  # not a child: eval() must not reach it
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)  # tells evaluate() the device

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        program: nn.Module = self.__dict__["_program"]
        out: torch.Tensor = program(*inputs)
        return out


def _example(context: SearchContext) -> tuple[torch.Tensor, ...]:
    batch = next(iter(context.evaluator.calibration))
    return tuple(batch[name][:2] for name in INPUT_NAMES)


def _recheck(context: SearchContext, pt2: Path) -> dict[str, Any]:
    """Accuracy (and latency, when this machine can measure the profile) of the exported program."""
    module = _Program(torch.export.load(str(pt2)).module())
    evaluator = context.evaluator
    accuracy = evaluate(
        module, evaluator.split, evaluator.tokenizer, batch_size=evaluator.batch_size, max_length=evaluator.max_length
    ).accuracy
    out: dict[str, Any] = {"accuracy": accuracy, "measured_latency_ms": None}
    profile = context.profile
    try:
        check_measurable(profile)
    except ProfileError as exc:
        out["latency_not_measured"] = str(exc)
        return out
    if profile.runtime in ("eager", "inductor"):
        ids = torch.randint(1000, 20000, (profile.batch_size, profile.sequence_length))
        inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
        with pinned_threads(profile.threads):
            run = torch_runner(module, inputs, profile)
            out["measured_latency_ms"] = time_runner(run, profile.warmup, profile.repeats, max_seconds=10).median_ms
    return out


def export_candidate(context: SearchContext, row: pd.Series, out: Path, name: str) -> dict[str, Any]:
    """Write every format of one front member and its model card; return the card."""
    space = context.space
    arch, policy = space.decode(space.from_key(str(row["key"])))
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    sub = extract(context.evaluator.model, arch).eval()
    quantized = apply_policy(sub, policy, list(context.evaluator.calibration))
    formats: dict[str, str] = {}

    _export_pt2(quantized, _example(context), folder / "model.pt2", sub.shape.max_position_embeddings)
    formats["pt2"] = "model.pt2"
    if set(policy.values()) <= ONNX_PRECISIONS:
        int8 = [fqn for fqn, precision in policy.items() if precision == "int8_dynamic"]
        export_onnx(sub, _example(context), INPUT_NAMES, folder / "model.onnx", int8_dynamic_linears=int8)
        formats["onnx"] = "model.onnx"
    # The label names let a deployment turn logits into labels without the training run at hand.
    labels = read_elastiq_config(context.config.run_dir / SUPERNET_DIR).get("label_names")
    save_model(sub, folder, extra={"arch": arch.to_dict(), "label_names": labels})
    atomic_write_text(folder / "policy.json", policy.to_json())
    context.evaluator.tokenizer.save_pretrained(str(folder))
    formats["safetensors"] = "model.safetensors + elastiq_config.json + policy.json"

    recorded = {k: _plain(row.get(k)) for k in ("accuracy", "latency_ms", "size_mb", "macs_m", "measured_latency_ms")}
    reloaded = _recheck(context, folder / "model.pt2")
    accuracy_ok = abs(reloaded["accuracy"] - float(recorded["accuracy"])) <= ACCURACY_TOLERANCE
    reference = float(recorded.get("measured_latency_ms") or recorded["latency_ms"])
    allowed = max(LATENCY_TOLERANCE * float(reference), LATENCY_FLOOR_MS)
    latency_ok = reloaded["measured_latency_ms"] is None or abs(reloaded["measured_latency_ms"] - reference) <= allowed
    card = {
        "name": name,
        "profile": context.profile.name,
        "arch": arch.to_dict(),
        "policy": policy.to_dict(),
        "formats": formats,
        "recorded_by_search": recorded,
        "exported_program": reloaded,
        "tolerances": {
            "accuracy_abs": ACCURACY_TOLERANCE,
            "latency_rel": LATENCY_TOLERANCE,
            "latency_floor_ms": LATENCY_FLOOR_MS,
        },
        "accuracy_check_passed": bool(accuracy_ok),
        "latency_check_passed": bool(latency_ok),
        "check_passed": bool(accuracy_ok and latency_ok),
        "inputs": list(INPUT_NAMES),
        "label_names": labels,
        "usage": "torch.export.load('model.pt2').module()(input_ids, attention_mask, token_type_ids) -> logits",
    }
    atomic_write_text(folder / "model_card.json", json.dumps(card, indent=2))
    return card


def _slug(rule: str) -> str:
    """A folder name for a rule: 'fastest: accuracy >= 0.8' -> 'fastest-accuracy-ge-0.8'."""
    text = rule.replace(">=", " ge ").replace("<=", " le ")
    return "-".join(re.findall(r"[A-Za-z0-9_.]+", text))


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def export_run(
    context: SearchContext,
    out: str | Path,
    *,
    ranks: list[int] | None = None,
    rules: list[str] | None = None,
    strict: bool = True,
) -> list[dict[str, Any]]:
    """Export the chosen front members of a search into ``out``; their model cards are returned.

    ``strict=False`` (the whole-pipeline run) skips a rule no front member satisfies, with a warning,
    instead of failing after the search is done.
    """
    front = load_front(context.folder)
    chosen: list[tuple[str, pd.Series]] = []
    for rank in ranks or []:
        chosen.append((f"rank{rank}", choose(front, rank=rank)))
    for rule in rules or []:
        try:
            chosen.append((_slug(rule), choose(front, rule=rule)))
        except ConfigError as exc:
            if strict:
                raise
            log.warning("export rule %r skipped: %s", rule, exc)
    if not chosen:
        raise ConfigError("nothing to export; give --rank N and/or --rule 'fastest: accuracy >= 0.8'")
    return [export_candidate(context, row, Path(out), name) for name, row in chosen]
