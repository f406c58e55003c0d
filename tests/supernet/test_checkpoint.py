"""Loading HF BERT folders: what loads, and a clear CheckpointError for everything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

from supernet.checkpoint import load_model, load_pretrained, load_space, load_tokenizer, save_model
from supernet.errors import CheckpointError
from tests.conftest import save_tiny_bert


def _edit_weights(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")


def test_sequence_classification_checkpoint_keeps_its_classifier(tmp_path: Path) -> None:
    folder = save_tiny_bert(tmp_path / "clf", classifier_labels=3)
    reference = BertForSequenceClassification.from_pretrained(folder).eval()
    model = load_pretrained(folder, num_labels=3).eval()
    ids = torch.randint(1000, 2000, (2, 9))
    with torch.no_grad():
        assert (reference(input_ids=ids).logits - model(ids)).abs().max() <= 1e-5


def test_pytorch_bin_checkpoint_loads(tmp_path: Path) -> None:
    folder = save_tiny_bert(tmp_path / "bin")
    state = load_file(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    model = load_pretrained(folder, num_labels=2)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, state["embeddings.word_embeddings.weight"])


def test_new_classifier_is_reproducible_by_seed(tiny_bert_dir: Path) -> None:
    a = load_pretrained(tiny_bert_dir, num_labels=2, seed=7)
    b = load_pretrained(tiny_bert_dir, num_labels=2, seed=7)
    c = load_pretrained(tiny_bert_dir, num_labels=2, seed=8)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_classifier_label_mismatch_needs_reinit(tmp_path: Path) -> None:
    folder = save_tiny_bert(tmp_path / "clf", classifier_labels=3)
    with pytest.raises(CheckpointError, match=r"3 labels but the task has 2.*reinit_classifier"):
        load_pretrained(folder, num_labels=2)
    assert load_pretrained(folder, num_labels=2, reinit_classifier=True).classifier.out_features == 2


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_folder", "does not exist"),
        ("no_config", "has no config.json"),
        ("not_bert", "holds a 'gpt2' model"),
        ("relative_positions", "absolute position embeddings"),
        ("no_weights", "no model.safetensors or pytorch_model.bin"),
        ("corrupt_weights", "cannot read the weights"),
        ("missing_key", "lacks 1 BERT weights"),
        ("unexpected_key", "weights a BERT encoder does not have"),
        ("wrong_shape", "config and weights disagree"),
        ("bad_json", "cannot read"),
        ("incomplete_config", "not a complete BERT config"),
    ],
)
def test_bad_checkpoints_are_refused_clearly(tmp_path: Path, breakage: str, message: str) -> None:
    folder = save_tiny_bert(tmp_path / "ckpt")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if breakage == "no_folder":
        folder = tmp_path / "nowhere"
    elif breakage == "no_config":
        config_path.unlink()
    elif breakage == "not_bert":
        config_path.write_text(json.dumps({**config, "model_type": "gpt2"}))
    elif breakage == "relative_positions":
        config_path.write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    elif breakage == "no_weights":
        (folder / "model.safetensors").unlink()
    elif breakage == "corrupt_weights":
        (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    elif breakage == "missing_key":
        _edit_weights(folder, lambda s: s.pop("encoder.layer.1.output.dense.weight"))
    elif breakage == "unexpected_key":
        _edit_weights(folder, lambda s: s.__setitem__("decoder.extra.weight", torch.zeros(2)))
    elif breakage == "wrong_shape":
        config_path.write_text(json.dumps({**config, "intermediate_size": 48}))
    elif breakage == "bad_json":
        config_path.write_text("{not json")
    elif breakage == "incomplete_config":
        config_path.write_text(json.dumps({k: v for k, v in config.items() if k != "hidden_size"}))
    with pytest.raises(CheckpointError, match=message) as info:
        load_pretrained(folder, num_labels=2)
    assert "\n" not in str(info.value)


def test_elastiq_folders_round_trip_and_refuse_foreign_folders(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from supernet.arch import BertElasticSpace

    model = load_pretrained(tiny_bert_dir, num_labels=2)
    space = BertElasticSpace.default(3, 4, 64)
    save_model(model, tmp_path / "m", space=space)
    assert load_space(tmp_path / "m") == space
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), load_model(tmp_path / "m").state_dict().values(), strict=True)
    )
    with pytest.raises(CheckpointError, match="not an elastiq model folder"):
        load_model(tiny_bert_dir)
    save_model(model, tmp_path / "sub")
    with pytest.raises(CheckpointError, match="not a super-network"):
        load_space(tmp_path / "sub")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
