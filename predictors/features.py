"""The feature encoding of a candidate (architecture, quantization policy) that every predictor reads.

One fixed-length float vector per candidate, for a given super-network ``BertShape`` and sequence
length, so that one matrix holds a whole population and any scikit-learn model can fit it. Columns,
in this order (``FeatureEncoder.names``):

Per layer slot ``i`` in ``0 .. shape.num_layers - 1`` (slots past the candidate's depth are *masked*:
all zero, whatever the policy says about those layers, because they do not run):

* ``layer{i}.active``: 1 when the layer is kept, else 0;
* ``layer{i}.heads``, ``layer{i}.ffn``: its attention heads and FFN width;
* ``layer{i}.<linear>.bits`` for ``<linear>`` in ``query``, ``key``, ``value``, ``attention_output``,
  ``ffn_in``, ``ffn_out`` (``quant.targets.LAYER_LINEARS`` in forward order): the nominal bits per
  weight of that Linear's precision (``Precision.bits_per_weight``: fp32 32, bf16 16, the int8
  precisions 8, int4 4).

Then:

* ``classifier.bits``: bits per weight of the classifier;
* ``depth``, ``total_heads``, ``total_ffn``: sums over the kept layers;
* ``macs``: multiply-accumulates of one sequence of ``seq_len`` tokens (``macs_for``): every policy
  target Linear, the pooler when ``shape.pooling == "cls"``, and attention's Q·Kᵀ and weights·V;
* ``size_bytes``: the serialised size, ``quant.size.estimate_size_bytes``;
* per precision ``p`` the encoder was built for: ``macs.<p>``, the MACs of the target Linears in
  ``p``, and ``weight_bytes.<p>``, the bytes of their weights in ``p`` (``Precision.weight_bytes``,
  scales included). The fp32 pooler and the attention matmuls are not in these: they are the same for
  every policy, and ``macs`` has them.

The per-layer bits say *where* the policy quantizes (accuracy depends on that); the per-precision MACs
and bytes say *how much* runs in each kernel (latency depends on that). The bits alone cannot tell the
three int8 precisions apart (all 8 bits); their per-precision MACs can.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from predictors.errors import PredictorError
from quant.policy import QuantPolicy
from quant.registry import Precision, precision_names
from quant.size import estimate_size_bytes
from quant.targets import CLASSIFIER, LAYER_LINEARS, linear_shapes
from supernet.arch import BertArch
from supernet.bert import BertShape, check_arch_fits

#: Short feature names of the Linears of a layer. Indexed by ``LAYER_LINEARS`` at import, so that a
#: Linear added there without a name here fails loudly instead of shifting the columns.
_SHORT_NAMES = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_output",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
}
LINEAR_FEATURE_NAMES = tuple(_SHORT_NAMES[name] for name in LAYER_LINEARS)

Candidate = tuple[BertArch, QuantPolicy]
_SEQ_LEN_MESSAGE = "seq_len must be >= 1, got {}; give the sequence length the metrics are measured at"


def _linear_tokens(fqn: str, seq_len: int) -> int:
    """How many token vectors a target Linear sees per sequence: the classifier reads one pooled vector."""
    return 1 if fqn == CLASSIFIER else seq_len


def macs_for(shape: BertShape, arch: BertArch, seq_len: int) -> int:
    """Analytic multiply-accumulates of sub-network ``arch`` of ``shape`` on one sequence of ``seq_len`` tokens.

    The same quantity as ``quant.size.count_macs`` (fvcore on a built model, slow), computed from the
    shapes alone: every target Linear (the classifier on the pooled vector), the pooler on [CLS] when
    the shape has one, and per layer and head ``seq_len² · head_dim`` MACs for Q·Kᵀ and as many for the
    weighted sum of V. Norms, softmax, activations and pooling by mean are not MACs.
    """
    if seq_len < 1:
        raise PredictorError(_SEQ_LEN_MESSAGE.format(seq_len))
    check_arch_fits(shape, arch)
    total = sum(_linear_tokens(fqn, seq_len) * out * inp for fqn, (out, inp) in linear_shapes(shape, arch).items())
    if shape.pooling == "cls":
        total += shape.hidden_size * shape.hidden_size
    total += sum(heads * seq_len * seq_len * 2 * shape.head_dim for heads in arch.heads)
    return total


class FeatureEncoder:
    """Encodes candidates (architecture, policy) of one super-network as rows of a float64 matrix.

    ``precisions`` are the precisions the search space may use; each gets a ``macs.<p>`` and a
    ``weight_bytes.<p>`` column. fp32 is always among them (layers a policy does not name are fp32).
    """

    def __init__(self, shape: BertShape, precisions: Sequence[str] | None = None, seq_len: int = 128) -> None:
        known = precision_names()
        wanted = list(known if precisions is None else precisions)
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise PredictorError(f"unknown precisions {unknown}; known precisions: {', '.join(known)}")
        if seq_len < 1:
            raise PredictorError(_SEQ_LEN_MESSAGE.format(seq_len))
        self.shape = shape
        self.seq_len = seq_len
        self.precisions: tuple[str, ...] = tuple(dict.fromkeys(["fp32", *wanted]))
        self._targets = frozenset(linear_shapes(shape))
        names: list[str] = []
        for i in range(shape.num_layers):
            names += [f"layer{i}.active", f"layer{i}.heads", f"layer{i}.ffn"]
            names += [f"layer{i}.{linear}.bits" for linear in LINEAR_FEATURE_NAMES]
        names += ["classifier.bits", "depth", "total_heads", "total_ffn", "macs", "size_bytes"]
        names += [f"macs.{p}" for p in self.precisions] + [f"weight_bytes.{p}" for p in self.precisions]
        self.names: tuple[str, ...] = tuple(names)
        self._column = {name: i for i, name in enumerate(names)}

    def transform(self, candidates: Sequence[Candidate]) -> np.ndarray:
        """One row per candidate, columns as ``names``; shape ``(len(candidates), len(names))``."""
        out = np.zeros((len(candidates), len(self.names)), dtype=np.float64)
        for row, candidate in enumerate(candidates):
            self._encode(candidate, out[row])
        return out

    def _kept_policy(self, arch: BertArch, policy: QuantPolicy) -> QuantPolicy:
        """``policy`` without the entries of layers ``arch`` drops (they do not run); unknown layers are errors."""
        linears = linear_shapes(self.shape, arch)
        unknown = [fqn for fqn in policy if fqn not in self._targets]
        if unknown:
            raise PredictorError(
                f"the policy names {len(unknown)} layer(s) the model does not have (e.g. {unknown[:3]}); "
                "name layers as quant.targets.linear_shapes does"
            )
        outside = [p for p in {policy.precision_for(fqn) for fqn in linears} if p not in self.precisions]
        if outside:
            raise PredictorError(
                f"the policy uses precisions {sorted(outside)} the encoder has no columns for; "
                f"build the FeatureEncoder with precisions including them (it has {list(self.precisions)})"
            )
        if all(fqn in linears for fqn in policy):
            return policy
        return QuantPolicy({fqn: p for fqn, p in policy.items() if fqn in linears}, policy.options)

    def _encode(self, candidate: Candidate, row: np.ndarray) -> None:
        if not (
            isinstance(candidate, tuple)
            and len(candidate) == 2
            and isinstance(candidate[0], BertArch)
            and isinstance(candidate[1], QuantPolicy)
        ):
            raise PredictorError(f"a candidate is a (BertArch, QuantPolicy) pair, got {candidate!r}")
        arch, policy = candidate
        check_arch_fits(self.shape, arch)
        policy = self._kept_policy(arch, policy)
        col = self._column
        built: dict[str, Precision] = {}
        for fqn, (out, inp) in linear_shapes(self.shape, arch).items():
            name = policy.precision_for(fqn)
            if name not in built:
                built[name] = policy.build(name)
            precision = built[name]
            if fqn == CLASSIFIER:
                row[col["classifier.bits"]] = precision.bits_per_weight
            else:
                layer, relative = fqn.removeprefix("bert.encoder.layer.").split(".", 1)
                row[col[f"layer{layer}.{_SHORT_NAMES[relative]}.bits"]] = precision.bits_per_weight
            row[col[f"macs.{name}"]] += _linear_tokens(fqn, self.seq_len) * out * inp
            row[col[f"weight_bytes.{name}"]] += precision.weight_bytes(out, inp)
        for i, (heads, ffn) in enumerate(zip(arch.heads, arch.ffn, strict=True)):
            row[col[f"layer{i}.active"]] = 1.0
            row[col[f"layer{i}.heads"]] = heads
            row[col[f"layer{i}.ffn"]] = ffn
        row[col["depth"]] = arch.depth
        row[col["total_heads"]] = sum(arch.heads)
        row[col["total_ffn"]] = sum(arch.ffn)
        row[col["macs"]] = macs_for(self.shape, arch, self.seq_len)
        row[col["size_bytes"]] = estimate_size_bytes(self.shape, arch, policy)
