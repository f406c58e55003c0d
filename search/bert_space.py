"""The joint search space of an elastic BERT: architecture genes and per-Linear precision genes.

Genes, in order (all integer choice indices):

* ``depth``: index into the elastic space's depth choices;
* per layer slot ``i``: ``layer{i}.heads`` and ``layer{i}.ffn`` (indices into the head / FFN choices),
  then one precision gene per policy-target Linear of that layer (``layer{i}.query.precision`` ...
  ``layer{i}.ffn_out.precision``; indices into the space's precision list);
* ``classifier.precision``.

Genes of layers beyond the depth are inactive and set to 0 by ``canonical``, so a candidate has one
encoding. A precision gene whose precision cannot take its Linear's shape (int4 needs widths that are
multiples of its group size; a 2-label classifier has 2 outputs) is repaired to fp32 (or the first
precision that can take it) in ``canonical`` too, so every canonical row is a buildable sub-network.

Candidates are ``(BertArch, QuantPolicy)`` pairs. A decoded policy names only the Linears that are not
fp32 (a policy leaves unnamed layers in fp32), which makes it canonical as well:
``decode(encode(c)) == c`` for every candidate whose policy does not name fp32 layers explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from predictors.features import FeatureEncoder
from quant.policy import QuantPolicy
from quant.registry import get_precision
from quant.targets import CLASSIFIER, LAYER_LINEARS
from search.errors import SearchError
from search.space import IntegerSpace
from supernet.arch import BertArch, BertElasticSpace
from supernet.bert import BertShape

#: Short gene names of the six Linears of a layer, in ``LAYER_LINEARS`` order.
LINEAR_GENES = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")


class BertJointSpace(IntegerSpace):
    """Architecture x per-Linear quantization policy of one elastic BERT, as integer genes."""

    def __init__(
        self, shape: BertShape, space: BertElasticSpace, precisions: Sequence[str], *, seq_len: int = 128
    ) -> None:
        precisions = tuple(dict.fromkeys(precisions))
        if not precisions:
            raise SearchError("the joint space needs at least one precision; e.g. precisions: [fp32, int8_static]")
        built = {name: get_precision(name) for name in precisions}  # unknown names fail here, one line
        if space.num_layers != shape.num_layers:
            raise SearchError(
                f"the elastic space has {space.num_layers} layers but the model {shape.num_layers}; "
                "use the space saved with the super-network"
            )
        self.shape, self.space, self.precisions = shape, space, precisions
        names: list[str] = ["depth"]
        upper: list[int] = [len(space.depth_choices) - 1]
        for i in range(space.num_layers):
            names += [f"layer{i}.heads", f"layer{i}.ffn"]
            upper += [len(space.head_choices) - 1, len(space.ffn_choices) - 1]
            names += [f"layer{i}.{gene}.precision" for gene in LINEAR_GENES]
            upper += [len(precisions) - 1] * len(LINEAR_GENES)
        names.append("classifier.precision")
        upper.append(len(precisions) - 1)
        super().__init__(names, [0] * len(names), upper)
        self._layer_genes = 2 + len(LINEAR_GENES)
        self._encoder = FeatureEncoder(shape, precisions, seq_len)
        self._repair = self._repair_tables(built)

    # Layout ------------------------------------------------------------------------------------------
    def _gene(self, layer: int, offset: int) -> int:
        """Column of gene ``offset`` (0 heads, 1 ffn, 2.. precisions) of layer slot ``layer``."""
        return 1 + layer * self._layer_genes + offset

    def _dims(self, linear: int, heads: int, ffn: int) -> tuple[int, int]:
        h, width = self.shape.hidden_size, heads * self.shape.head_dim
        return [(width, h), (width, h), (width, h), (h, width), (ffn, h), (h, ffn)][linear]

    def _repair_tables(self, built: dict[str, Any]) -> dict[tuple[int, int, int], np.ndarray]:
        """For each (linear, heads index, ffn index): precision index -> the index it is repaired to."""
        fallback_order = (["fp32"] if "fp32" in self.precisions else []) + list(self.precisions)

        def table(out_features: int, in_features: int) -> np.ndarray:
            ok = [built[p].layer_problem(out_features, in_features) is None for p in self.precisions]
            usable = [self.precisions.index(p) for p in fallback_order if ok[self.precisions.index(p)]]
            if not usable:
                raise SearchError(
                    f"none of the precisions {list(self.precisions)} can take a {in_features}->{out_features} "
                    "Linear; add fp32 to the precisions"
                )
            return np.array([j if ok[j] else usable[0] for j in range(len(self.precisions))])

        tables: dict[tuple[int, int, int], np.ndarray] = {}
        for a, heads in enumerate(self.space.head_choices):
            for b, ffn in enumerate(self.space.ffn_choices):
                for linear in range(len(LINEAR_GENES)):
                    tables[(linear, a, b)] = table(*self._dims(linear, heads, ffn))
        tables[(-1, 0, 0)] = table(self.shape.num_labels, self.shape.hidden_size)
        return tables

    # SearchSpace -------------------------------------------------------------------------------------
    def canonical(self, X: np.ndarray) -> np.ndarray:
        out = self.validate(X).copy()
        depth = np.asarray(self.space.depth_choices)[out[:, 0]]
        for i in range(self.space.num_layers):
            columns = [self._gene(i, k) for k in range(self._layer_genes)]
            inactive = depth <= i
            out[np.ix_(inactive, columns)] = 0
            heads, ffn = out[:, columns[0]], out[:, columns[1]]
            for linear in range(len(LINEAR_GENES)):
                col = columns[2 + linear]
                for row in np.flatnonzero(~inactive):
                    out[row, col] = self._repair[(linear, int(heads[row]), int(ffn[row]))][out[row, col]]
        out[:, -1] = self._repair[(-1, 0, 0)][out[:, -1]]
        return out

    def decode(self, x: np.ndarray) -> tuple[BertArch, QuantPolicy]:
        row = self.canonical(np.asarray(x).reshape(1, -1))[0]
        depth = self.space.depth_choices[row[0]]
        heads = tuple(self.space.head_choices[row[self._gene(i, 0)]] for i in range(depth))
        ffn = tuple(self.space.ffn_choices[row[self._gene(i, 1)]] for i in range(depth))
        layers: dict[str, str] = {}
        for i in range(depth):
            for linear, name in enumerate(LAYER_LINEARS):
                precision = self.precisions[row[self._gene(i, 2 + linear)]]
                if precision != "fp32":
                    layers[f"bert.encoder.layer.{i}.{name}"] = precision
        if self.precisions[row[-1]] != "fp32":
            layers[CLASSIFIER] = self.precisions[row[-1]]
        return BertArch(heads=heads, ffn=ffn), QuantPolicy(layers)

    def encode(self, candidate: Any) -> np.ndarray:
        try:
            arch, policy = candidate
        except (TypeError, ValueError):
            raise SearchError("a BERT candidate is a pair (BertArch, QuantPolicy)") from None
        self.space.validate(arch)
        known = {f"bert.encoder.layer.{i}.{name}" for i in range(arch.depth) for name in LAYER_LINEARS} | {CLASSIFIER}
        unknown = sorted(set(policy) - known)
        if unknown:
            raise SearchError(f"the policy names layers this architecture does not have, e.g. {unknown[0]!r}")

        def index(fqn: str) -> int:
            precision = policy.precision_for(fqn)
            if precision not in self.precisions:
                raise SearchError(f"{fqn} is {precision}, not one of the space's precisions {list(self.precisions)}")
            return self.precisions.index(precision)

        row = np.zeros(self.n_var, dtype=np.int64)
        row[0] = self.space.depth_choices.index(arch.depth)
        for i, (heads, ffn) in enumerate(zip(arch.heads, arch.ffn, strict=True)):
            row[self._gene(i, 0)] = self.space.head_choices.index(heads)
            row[self._gene(i, 1)] = self.space.ffn_choices.index(ffn)
            for linear, name in enumerate(LAYER_LINEARS):
                row[self._gene(i, 2 + linear)] = index(f"bert.encoder.layer.{i}.{name}")
        row[-1] = index(CLASSIFIER)
        canonical = self.canonical(row.reshape(1, -1))[0]
        if not np.array_equal(canonical, row):
            gene = self.names[int(np.flatnonzero(canonical != row)[0])]
            raise SearchError(f"{gene} holds a precision that cannot take that layer's shape; choose another one")
        return canonical

    def uniform(self, arch: BertArch, precision: str) -> np.ndarray:
        """The row of ``arch`` with every searched Linear in ``precision``: the deployments a user compares
        against (the full model in fp32 or int8), which the search evaluates first."""
        if precision not in self.precisions:
            raise SearchError(f"{precision} is not one of the space's precisions {list(self.precisions)}")
        layers = {f"bert.encoder.layer.{i}.{name}": precision for i in range(arch.depth) for name in LAYER_LINEARS}
        return self.encode((arch, QuantPolicy({**layers, CLASSIFIER: precision})))

    def describe(self, x: np.ndarray) -> dict[str, Any]:
        arch, policy = self.decode(x)
        return {"arch": arch.to_dict(), "policy": policy.to_dict()}

    def features(self, X: np.ndarray) -> np.ndarray:
        """``predictors.features.FeatureEncoder`` rows: per-layer choices and bits, MACs, bytes by precision."""
        return self._encoder.transform([self.decode(x) for x in self.canonical(X)])

    def feature_names(self) -> tuple[str, ...]:
        return tuple(self._encoder.names)
