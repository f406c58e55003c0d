"""The optuna back-end: exact budgets, no re-evaluation, a study optuna's tools can read, resume, determinism."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.trial import TrialState
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from search import optuna_backend
from search.engine import SearchResult, run_search
from search.errors import SearchError
from search.optuna_backend import run_optuna
from search.problem import Constraint, Objective, objective_matrix
from search.search_config import SearchConfig
from search.space import IntegerSpace
from search.store import ResultsStore
from supernet.errors import ConfigError
from tests.search.test_engine import OBJECTIVES, SPACE, Recorder, _assert_history_matches, zdt1

POPULATION = 6


def _run(budget: int, seed: int = 0, evaluate: Any = None, **kwargs: Any) -> SearchResult:
    options: dict[str, Any] = {"population": POPULATION, "seed": seed, **kwargs}
    return run_optuna(SPACE, evaluate or Recorder(), OBJECTIVES, budget=budget, **options)


def _study(storage: str | BaseStorage, name: str = "elastiq") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def _slots(study: optuna.Study) -> list[tuple[int, int, dict[str, int]]]:
    """(slot, generation, parameters) of the completed trials, in slot order: what the search asked."""
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    rows = [(t.user_attrs["elastiq_slot"], t.user_attrs["elastiq_generation"], t.params) for t in trials]
    return sorted(rows, key=lambda r: r[0])


@pytest.mark.parametrize("budget", [12, 17])
def test_budget_is_exact_and_nothing_is_evaluated_twice(budget: int) -> None:
    recorder, storage = Recorder(), InMemoryStorage()
    result = _run(budget, evaluate=recorder, storage=storage)
    assert len(recorder.keys) == len(set(recorder.keys)) == budget == len(result.history)
    assert result.history["key"].tolist() == recorder.keys
    assert set(result.history["method"]) == {"optuna"} and result.method == "optuna"
    assert recorder.calls == result.history["iteration"].nunique()  # one evaluate call per generation
    assert result.hypervolume[-1][0] == budget
    trials = _study(storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    evaluated = [t.user_attrs["key"] for t in complete if not t.user_attrs["elastiq_from_store"]]
    assert evaluated == recorder.keys  # every evaluation is one trial, told in evaluation order
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs["elastiq_status"] == "over_budget" for t in failed)
    assert len(complete) + len(failed) == len(trials) and len(trials) % POPULATION == 0


def test_sqlite_study_shows_the_trials_with_keys_and_metrics(tmp_path: Path) -> None:
    result = _run(6, population=4, store=ResultsStore(tmp_path), constraints=[Constraint("g", "<=", 8.0)])
    assert (tmp_path / "optuna.db").is_file()
    study = _study(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert study.user_attrs["elastiq_settings"]["method"] == "optuna"
    history = result.history.set_index("key")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.user_attrs["key"] for t in complete] == result.history["key"].tolist()
    for trial in complete:
        row = history.loc[trial.user_attrs["key"]]
        assert SPACE.key(np.array([trial.params[n] for n in SPACE.names])) == trial.user_attrs["key"]
        assert trial.values == [row["f1"], row["score"]]
        assert all(trial.user_attrs[m] == row[m] for m in ("f1", "score", "g"))
        assert trial.user_attrs["elastiq_constraints"] == [row["g"] - 8.0] == list(trial.constraints.values())
        # the generation this back-end records is the one optuna's NSGA-II works with
        assert trial.system_attrs["NSGAIISampler:generation"] == trial.user_attrs["elastiq_generation"]
    frame = study.trials_dataframe()
    assert {"user_attrs_key", "user_attrs_f1", "user_attrs_score", "params_g0"} <= set(frame.columns)
    assert frame["state"].tolist() == ["COMPLETE"] * 6 + ["FAIL"] * 2  # 2 generations of 4, cut at 6


@pytest.mark.parametrize(
    ("kill", "batch"),
    [
        ("evaluate:9", None),  # inside a generation's evaluate call
        ("evaluate:14", 4),  # inside a chunk of a later generation
        ("tell:8", None),  # after the evaluations were stored, before every trial was told
        ("ask:3", None),  # between enqueueing an initial candidate and asking it (a WAITING trial)
        ("suggest:45", None),  # while a trial was suggesting its genes (a RUNNING trial without all of them)
    ],
)
def test_resume_after_a_kill_continues_the_same_search(
    kill: str, batch: int | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    initial = np.array([[0] * 6, [9] * 6, [4] * 6])
    options: dict[str, Any] = {"eval_batch_size": batch, "initial": initial}
    reference_storage = InMemoryStorage()
    uninterrupted = _run(26, storage=reference_storage, **options)
    where, _, count = kill.partition(":")
    # The storage outlives the "process" like an SQLite file would (see the SQLite test below); the store
    # is a folder because an in-memory store cannot be resumed.
    killed, storage, store = Recorder(), InMemoryStorage(), ResultsStore(tmp_path)
    with monkeypatch.context() as patch:
        if where == "evaluate":
            killed.kill_after = int(count)
        else:
            _kill_on_call(patch, where, int(count))
        with pytest.raises(KeyboardInterrupt):
            _run(26, evaluate=killed, storage=storage, store=store, **options)
    stored = store.frame()["key"].tolist()
    assert stored == killed.keys
    states = {t.state for t in _study(storage).get_trials()}
    assert states & {TrialState.RUNNING, TrialState.WAITING}  # what a kill leaves behind
    resumed = Recorder()
    result = _run(26, evaluate=resumed, storage=storage, store=ResultsStore(tmp_path), **options)
    assert not set(resumed.keys) & set(stored)  # nothing stored was evaluated again
    assert len(stored) + len(resumed.keys) == 26
    _assert_history_matches(result.history, uninterrupted.history)
    assert _slots(_study(storage)) == _slots(_study(reference_storage))  # the same trials, in the same places
    assert not {t.state for t in _study(storage).get_trials()} & {TrialState.RUNNING, TrialState.WAITING}


def _kill_on_call(patch: pytest.MonkeyPatch, where: str, count: int) -> None:
    """Raise KeyboardInterrupt on the ``count``-th call of ``_Study.tell``, ``Study.ask`` or ``Trial.suggest_int``."""
    owner: Any = {"tell": optuna_backend._Study, "ask": optuna.Study, "suggest": optuna.trial.Trial}[where]
    name = {"tell": "tell", "ask": "ask", "suggest": "suggest_int"}[where]
    original = getattr(owner, name)
    calls = [0]

    def killing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == count:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    patch.setattr(owner, name, killing)


def test_resume_from_an_sqlite_storage(tmp_path: Path) -> None:
    uninterrupted = _run(9, population=4)
    killed = Recorder(kill_after=6)
    with pytest.raises(KeyboardInterrupt):
        _run(9, evaluate=killed, store=ResultsStore(tmp_path), population=4)
    resumed = Recorder()
    result = _run(9, evaluate=resumed, store=ResultsStore(tmp_path), population=4)
    assert len(killed.keys) == 4 and len(resumed.keys) == 9 - 4
    _assert_history_matches(result.history, uninterrupted.history)
    failed = _study(f"sqlite:///{tmp_path / 'optuna.db'}").get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 4 + 3  # the interrupted generation, then the trials over the budget


def test_same_seed_same_history_different_seed_different() -> None:
    a, b, c = (_run(30, seed=s) for s in (7, 7, 8))
    _assert_history_matches(b.history, a.history)
    assert a.history["key"].tolist() != c.history["key"].tolist()


def test_a_smaller_budget_is_a_prefix_and_a_larger_one_continues(tmp_path: Path) -> None:
    storage = InMemoryStorage()
    small = _run(15, storage=storage, store=ResultsStore(tmp_path))
    larger = Recorder()
    continued = _run(33, evaluate=larger, storage=storage, store=ResultsStore(tmp_path))
    uninterrupted = _run(33)
    _assert_history_matches(small.history, uninterrupted.history.iloc[:15])
    _assert_history_matches(continued.history, uninterrupted.history)
    assert len(larger.keys) == 33 - 15  # the trials cut by the first budget were asked again, nothing re-evaluated
    again = Recorder()
    assert len(_run(15, evaluate=again, storage=storage, store=ResultsStore(tmp_path)).history) == 15
    assert again.calls == 0


def test_a_lost_storage_replays_from_the_store(tmp_path: Path) -> None:
    _run(16, store=ResultsStore(tmp_path), storage=InMemoryStorage())
    recorder = Recorder()
    result = _run(28, evaluate=recorder, store=ResultsStore(tmp_path), storage=InMemoryStorage())
    assert len(recorder.keys) == 28 - 16  # the replay answered every stored candidate from the store
    _assert_history_matches(result.history, _run(28).history)


def test_duplicates_are_told_the_stored_values_and_cost_no_budget() -> None:
    class Layered(IntegerSpace):  # genes beyond the depth are inactive: many encodings per candidate
        def canonical(self, X: np.ndarray) -> np.ndarray:
            X = self.validate(X).copy()
            X[:, 1:][np.arange(1, 4)[None, :] >= X[:, :1]] = 0
            return X

    space = Layered(["depth", "w1", "w2", "w3"], [1, 0, 0, 0], [4, 2, 2, 2])

    def cost(X: np.ndarray) -> list[dict[str, float]]:
        size = 1.0 + X.sum(axis=1)
        return [{"size": s, "quality": float(np.log(s) + 0.1 * d)} for s, d in zip(size, X[:, 0], strict=True)]

    recorder, storage = Recorder(space=space, fn=cost), InMemoryStorage()
    objectives = [Objective("size"), Objective("quality", "max")]
    run_optuna(space, recorder, objectives, budget=30, population=8, storage=storage)
    assert len(recorder.keys) == len(set(recorder.keys)) == 30
    complete = _study(storage).get_trials(states=(TrialState.COMPLETE,))
    from_store = [t for t in complete if t.user_attrs["elastiq_from_store"]]
    assert from_store  # optuna proposed candidates (or other encodings of them) that were already evaluated
    values = {t.user_attrs["key"]: t.values for t in complete if not t.user_attrs["elastiq_from_store"]}
    assert all(t.values == values[t.user_attrs["key"]] for t in from_store)


def test_a_tiny_space_stops_when_nothing_new_is_proposed(caplog: pytest.LogCaptureFixture) -> None:
    space = IntegerSpace(["a", "b"], [0, 0], [2, 1])  # 6 candidates
    recorder = Recorder(space=space, fn=lambda X: [{"f1": 1.0 + x[0], "score": 1.0 + x[1]} for x in X])
    with caplog.at_level(logging.WARNING, logger="search.optuna_backend"):
        result = run_optuna(space, recorder, OBJECTIVES, budget=20, population=4)
    assert len(recorder.keys) == len(set(recorder.keys)) == len(result.history) <= 6
    assert "only evaluated candidates" in caplog.text


def test_constraints_keep_the_front_feasible(monkeypatch: pytest.MonkeyPatch) -> None:
    constraints = (Constraint("f1", "<=", 1.5), Constraint("g", "<=", 6.0))
    for set_constraint in (True, False):  # optuna >= 5's Trial.set_constraint, and constraints_func before it
        monkeypatch.setattr(optuna_backend, "_SET_CONSTRAINT", set_constraint)
        storage = InMemoryStorage()
        with nullcontext() if set_constraint else pytest.warns(FutureWarning, match="constraints_func"):
            result = _run(30, constraints=constraints, storage=storage)
        assert len(result.front) > 0 and result.front["feasible"].all()
        assert (result.front["f1"] <= 1.5).all() and (result.front["g"] <= 6.0).all()
        for trial in _study(storage).get_trials(states=(TrialState.COMPLETE,)):
            g = [trial.user_attrs["f1"] - 1.5, trial.user_attrs["g"] - 6.0]
            assert list(trial.constraints.values()) == pytest.approx(g) == trial.user_attrs["elastiq_constraints"]


def test_front_holds_only_evaluated_non_dominated_points_in_objective_order() -> None:
    objectives = (Objective("score", "max"), Objective("f1", "min"))
    result = run_optuna(SPACE, Recorder(), objectives, budget=30, population=POPULATION)
    front = result.front
    assert list(front.columns[:3]) == ["key", "score", "f1"]
    assert set(front["key"]) <= set(result.history["key"])
    everything = objective_matrix(objectives, {m: result.history[m].to_numpy() for m in ("score", "f1")}, 30)
    best = NonDominatedSorting().do(everything, only_non_dominated_front=True)
    assert set(front["key"]) == set(result.history["key"].iloc[best])
    assert front["score"].is_monotonic_decreasing


def test_initial_candidates_are_the_first_trials(tmp_path: Path) -> None:
    initial = np.array([[0] * 6, [9] * 6, [0] * 6])  # a duplicate is dropped, not asked twice
    storage = InMemoryStorage()
    recorder = Recorder()
    result = _run(14, evaluate=recorder, initial=initial, storage=storage, store=ResultsStore(tmp_path))
    trials = _study(storage).get_trials()
    assert [[t.params[n] for n in SPACE.names] for t in trials[:2]] == initial[:2].tolist()
    assert trials[0].system_attrs["fixed_params"] == {n: 0 for n in SPACE.names}  # enqueued
    assert recorder.keys[:2] == SPACE.keys(initial[:2])
    # the first generation is the shared first population of every method (initial + the random draw)
    random = run_search(SPACE, zdt1, OBJECTIVES, method="random", budget=6, population=6, initial=initial)
    assert recorder.keys[:6] == random.history["key"].tolist()
    assert SPACE.key(initial[0]) in set(result.front["key"])
    with pytest.raises(SearchError, match="other settings"):  # the initial candidates belong to the settings
        _run(14, store=ResultsStore(tmp_path))


@pytest.mark.parametrize(
    "url",
    ["notaurl", "foo://bar", "sqlite:////nonexistent/folder/optuna.db", "postgresql://user@localhost/db"],
)
def test_a_bad_storage_url_is_a_clear_error(url: str, tmp_path: Path) -> None:
    recorder = Recorder()
    with pytest.raises(SearchError, match="cannot open optuna storage") as error:
        _run(10, evaluate=recorder, storage=url, store=ResultsStore(tmp_path))
    message = str(error.value)
    assert repr(url) in message and "sqlite:///" in message and "\n" not in message
    assert recorder.calls == 0 and not list(tmp_path.iterdir())  # nothing written, not even search.json


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "nsga2", "storage": "sqlite:///x.db"}, "belong to the optuna method"),
        ({"method": "random", "study_name": "other"}, "belong to the optuna method"),
        ({"method": "optuna", "storage": 3}, "storage must be"),
        ({"method": "optuna", "study_name": ""}, "study_name"),
        ({"method": "optuna", "population": 1}, "population >= 2"),
    ],
)
def test_bad_optuna_settings_are_errors_before_anything_is_evaluated(kwargs: dict[str, Any], match: str) -> None:
    recorder = Recorder()
    with pytest.raises(SearchError, match=match):
        run_search(SPACE, recorder, OBJECTIVES, **{"budget": 10, **kwargs})
    assert recorder.calls == 0


def test_a_study_of_another_search_or_store_is_an_error() -> None:
    storage = InMemoryStorage()
    _run(8, storage=storage)
    with pytest.raises(SearchError, match=r"other settings \(seed\)"):
        _run(8, seed=1, storage=storage)
    with pytest.raises(SearchError, match=r"results store \(in memory\) lacks"):
        _run(12, storage=storage)  # a fresh in-memory store cannot resume this study
    _run(8, seed=1, storage=storage, study_name="second")  # another study in the same storage is fine


def test_optuna_logs_only_when_verbose(caplog: pytest.LogCaptureFixture) -> None:
    verbosity = optuna.logging.get_verbosity()
    with caplog.at_level(logging.WARNING, logger="search.optuna_backend"):
        _run(6)
    assert not [r for r in caplog.records if r.name.startswith("optuna")]
    assert optuna.logging.get_verbosity() == verbosity  # restored
    with caplog.at_level(logging.INFO, logger="search.optuna_backend"):  # e.g. elastiq -v
        _run(6)
    assert any(r.name.startswith("optuna") and "A new study created" in r.message for r in caplog.records)


def test_search_config_takes_the_optuna_method_and_a_storage() -> None:
    config = SearchConfig.from_dict({"method": "optuna", "storage": "sqlite:///runs/optuna.db"})
    assert config.method == "optuna" and config.storage == "sqlite:///runs/optuna.db"
    assert SearchConfig.from_dict(config.to_dict()) == config
    assert SearchConfig.from_dict({"method": "optuna"}).storage is None
    with pytest.raises(ConfigError, match="storage is the optuna method's"):
        SearchConfig.from_dict({"method": "nsga2", "storage": "sqlite:///x.db"})
    with pytest.raises(ConfigError, match=r"search\.storage must be"):
        SearchConfig.from_dict({"method": "optuna", "storage": 5})
    with pytest.raises(ConfigError, match="optuna"):
        SearchConfig.from_dict({"method": "tpe"})


def test_history_columns_match_the_other_methods() -> None:
    optuna_history = _run(12).history
    nsga2 = run_search(SPACE, zdt1, OBJECTIVES, method="nsga2", budget=12, population=POPULATION).history
    assert optuna_history.columns.tolist() == nsga2.columns.tolist()
    assert optuna_history["iteration"].tolist() == [0] * 6 + [1] * 6
    pd.testing.assert_series_equal(optuna_history.dtypes, nsga2.dtypes)
