"""The results store: written as it happens, atomically, reloaded on resume, never twice the same key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.errors import SearchError
from search.store import EVALUATIONS, ResultsStore


def _add(store: ResultsStore, key: str, acc: float, ms: float, iteration: int = 0) -> None:
    store.add(key, {"acc": acc, "ms": ms}, {"heads": [1, 2], "note": key}, iteration, "random", 0.25)


def test_every_add_leaves_a_complete_file(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "run")
    assert len(store) == 0 and not (tmp_path / "run" / EVALUATIONS).exists()
    for i in range(3):
        _add(store, f"{i}-0", 0.5 + i / 10, 3.0 * i + 1)
        on_disk = pd.read_csv(tmp_path / "run" / EVALUATIONS)
        assert len(on_disk) == i + 1
        assert list(on_disk.columns) == ["key", "index", "iteration", "method", "acc", "ms", "description", "seconds"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [EVALUATIONS]  # no temporary files left


def test_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    store = ResultsStore(tmp_path)
    values = rng.random(20) * 10.0 ** rng.integers(-6, 6, 20)
    for i, v in enumerate(values):
        _add(store, f"{i}-{i % 3}", float(v), float(1 / (v + 1)), iteration=i // 5)
    again = ResultsStore(tmp_path)
    assert len(again) == 20
    pd.testing.assert_frame_equal(again.frame(), store.frame())
    record = again.get("7-1")
    assert record.metrics == {"acc": values[7], "ms": 1 / (values[7] + 1)}  # floats survive the CSV exactly
    assert record.description == {"heads": [1, 2], "note": "7-1"}
    assert (record.index, record.iteration, record.method, record.seconds) == (7, 1, "random", 0.25)
    assert again.contains("19-1") and "19-1" in again and not again.contains("20-2")


def test_duplicate_key_is_an_error_also_after_reload(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    _add(store, "1-2", 0.5, 3.0)
    with pytest.raises(SearchError, match="already stored"):
        _add(store, "1-2", 0.6, 2.0)
    with pytest.raises(SearchError, match="already stored"):
        _add(ResultsStore(tmp_path), "1-2", 0.6, 2.0)
    assert len(ResultsStore(tmp_path)) == 1


def test_keys_that_look_like_numbers_stay_strings(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    _add(store, "3", 0.5, 3.0)
    _add(store, "007", 0.5, 3.0)
    again = ResultsStore(tmp_path)
    assert again.contains("3") and again.contains("007")


def test_metrics_appearing_later_get_their_own_column(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.add("a", {"acc": 0.5}, {}, 0, "random", 1.0)
    store.add("b", {"acc": 0.6, "size_mb": 12.0}, {}, 0, "random", 1.0)
    frame = ResultsStore(tmp_path).frame()
    assert frame["size_mb"].isna().tolist() == [True, False] and frame["size_mb"].iloc[1] == 12.0
    assert ResultsStore(tmp_path).get("a").metrics == {"acc": 0.5}


@pytest.mark.parametrize(
    ("key", "metrics", "description", "method", "match"),
    [
        ("", {"acc": 1.0}, {}, "random", "non-empty string"),
        ("a", {"index": 1.0}, {}, "random", "reserved"),
        ("a", {"acc": "high"}, {}, "random", "not a number"),
        ("a", {"acc": 1.0}, {"x": object()}, "random", "JSON"),
        ("a", {"acc": 1.0}, {}, "", "method"),
    ],
)
def test_bad_records_are_rejected(key: str, metrics: dict, description: dict, method: str, match: str) -> None:
    store = ResultsStore()
    with pytest.raises(SearchError, match=match):
        store.add(key, metrics, description, 0, method, 1.0)
    assert len(store) == 0


def test_in_memory_store_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = ResultsStore()
    _add(store, "1", 0.5, 1.0)
    store.write_json("x.json", {"a": 1})
    assert store.path is None and store.read_json("x.json") is None
    assert list(tmp_path.iterdir()) == []
    assert len(store.frame()) == 1


def test_missing_key_and_empty_frame() -> None:
    store = ResultsStore()
    with pytest.raises(SearchError, match="no evaluation stored"):
        store.get("1-2")
    assert list(store.frame().columns) == ["key", "index", "iteration", "method", "description", "seconds"]


def test_json_side_files(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    assert store.read_json("search.json") is None
    store.write_json("search.json", {"method": "random", "seed": 3})
    assert ResultsStore(tmp_path).read_json("search.json") == {"method": "random", "seed": 3}
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(SearchError, match="not valid JSON"):
        store.read_json("bad.json")


def test_damaged_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / EVALUATIONS).write_text("key,acc\n1,0.5\n", encoding="utf-8")
    with pytest.raises(SearchError, match="lacks columns"):
        ResultsStore(tmp_path)
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(SearchError, match="is a file"):
        ResultsStore(tmp_path / "file")
