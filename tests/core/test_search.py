"""The search's parts (src.core.search) in this process: the search space from the config and the command line,
storages and their one-line errors (never with a password), the settings refused before anything starts (a bad
sampler or pruner included), a study that exists with another direction or search space, trials past n_trials never
drawn, stale trials failed, the PostgreSQL lock's one connection, a run's trial found through public API, the
study's counts."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from src.core.errors import UserError
from src.core.search import (
    HEARTBEAT,
    LOCK_CONNECTION,
    Search,
    counted,
    database_url,
    open_storage,
    running_trial,
    search_space,
    trial_counts,
)
from tests.helpers import REPO

PARAMS = {"optimizer.lr": "tag(log, interval(0.005, 0.2))", "data.batch_size": "choice(32, 64, 128)",
          "net.convs": "range(1, 4)", "augmentation": "choice(none, light)"}  # fmt: skip


def search(tmp_path: Path, **settings: object) -> Search:
    """A Search with its settings only (what `sweep` launches with is not needed by the parts tested here)."""
    defaults = {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "study_name": "tiny", "params": None}
    return Search(hydra_context=None, task_function=None, config=None, **{**defaults, **settings})


def test_the_search_space_is_the_config_re_ranged_or_fixed_by_the_command_line() -> None:
    space, fixed = search_space(PARAMS, ["data.batch_size=16", "net.convs=tag(log, range(1, 8))", "seed=3"])
    assert space == {
        "optimizer.lr": FloatDistribution(0.005, 0.2, log=True),
        "net.convs": IntDistribution(1, 8, log=True),  # Optuna's range includes its end
        "augmentation": CategoricalDistribution(["none", "light"]),
    }
    assert fixed == ["data.batch_size=16", "seed=3"]
    assert search_space({"a": "range(0.5, 2.0, 0.5)", "b": "1,2"}, [])[0] == {
        "a": FloatDistribution(0.5, 2.0, step=0.5), "b": CategoricalDistribution([1, 2])}  # fmt: skip


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("mysql://u@h/db", "hydra.sweeper.storage='mysql://u@h/db' is not one of sqlite:///PATH, postgresql://"),
        ("postgres://u:secret@h/db", "hydra.sweeper.storage='postgres://u:***@h/db' is not one of sqlite:///PATH"),
        (
            "postgresql://user:secret@127.0.0.1:1/db",
            "hydra.sweeper.storage=postgresql://user:***@127.0.0.1:1/db cannot be opened: ",
        ),  # fmt: skip
    ],
)
def test_a_bad_or_unreachable_storage_is_one_line_without_its_password(storage: str, message: str) -> None:
    with pytest.raises(UserError) as refused:
        open_storage(storage)
    assert str(refused.value).startswith(message) and "secret" not in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0 must be a whole number >= 1"),
        ({"n_jobs": -1}, "hydra.sweeper.n_jobs=-1 must be a whole number >= 1"),
        ({"direction": "up"}, "hydra.sweeper.direction=up is not one of maximize, minimize"),
        ({"heartbeat_interval": 60, "grace_period": 30}, "hydra.sweeper.heartbeat_interval=60 must be > 0 and below"),
        (
            {"pruner": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": -1}},
            "hydra.sweeper.pruner.n_startup_trials=-1 is refused by optuna.pruners.MedianPruner: Number of startup "
            "trials cannot be negative",
        ),
        (
            {"pruner": {"_target_": "optuna.pruners.MedianPruner", "n_warmup_step": 2}},
            "hydra.sweeper.pruner.n_warmup_step is not a setting of optuna.pruners.MedianPruner; it takes "
            "n_startup_trials, n_warmup_steps, interval_steps, n_min_trials",
        ),
        (  # a class that needs two settings: the failure is not pinned on the first one alone
            {"pruner": {"_target_": "optuna.pruners.PatientPruner", "wrapped_pruner": None, "patience": -1}},
            "hydra.sweeper.pruner (optuna.pruners.PatientPruner) cannot be built from its settings: ",
        ),
        (
            {"sampler": {"_target_": "optuna.samplers.TPESampler", "n_startup_trials": "ten"}},
            "hydra.sweeper.sampler.n_startup_trials='ten' is not of type int",
        ),
        (
            {"sampler": {"_target_": "optuna.samplers.TPESampler", "seed": 1.5}},
            "hydra.sweeper.sampler.seed=1.5 is not of type int | None",
        ),
        (
            {"pruner": {"_target_": "optuna.pruners.Median"}},
            "hydra.sweeper.pruner._target_=optuna.pruners.Median is not an Optuna pruner; choose "
            "hydra/sweeper/pruner= one of hyperband, median, percentile, successive_halving",
        ),
    ],
)
def test_bad_settings_are_refused_before_a_study_is_touched(settings: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as refused:
        as_configured = {name: OmegaConf.create(value) if isinstance(value, dict) else value
                         for name, value in settings.items()}  # fmt: skip
        search(tmp_path, **as_configured).sweep([])
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert not (tmp_path / "optuna.db").exists()


def test_a_study_with_another_direction_or_search_space_is_refused(tmp_path: Path) -> None:
    space, _ = search_space(PARAMS, [])
    search(tmp_path).open_study(space)  # made
    assert search(tmp_path).open_study(space).study_name == "tiny"  # the same settings continue it
    with pytest.raises(UserError, match="study tiny in sqlite:///.* was made with direction maximize, not "
                       "hydra.sweeper.direction=minimize"):  # fmt: skip
        search(tmp_path, direction="minimize").open_study(space)
    other, _ = search_space(PARAMS, ["optimizer.lr=interval(0.01, 0.1)", "augmentation=none"])
    with pytest.raises(UserError, match="draws augmentation, optimizer.lr from another search space"):
        search(tmp_path).open_study(other)


def test_no_trial_is_drawn_past_n_trials_in_the_whole_study(tmp_path: Path) -> None:
    space, _ = search_space(PARAMS, [])
    first, second = search(tmp_path, n_trials=3, n_jobs=2), search(tmp_path, n_trials=3, n_jobs=2)
    study = first.open_study(space)
    assert [trial.number for trial in first.ask(study, space, None)] == [0, 1]
    assert [trial.number for trial in second.ask(second.open_study(space), space, None)] == [2]
    assert first.ask(study, space, None) == []


def test_a_trial_draws_the_same_values_whichever_worker_draws_it(tmp_path: Path) -> None:
    space, _ = search_space(PARAMS, [])
    sampler = optuna.samplers.RandomSampler
    drawn = []
    for folder in ("a", "b"):
        worker = search(tmp_path / folder, n_trials=1)
        worker.sampler_config = {"_target_": f"{sampler.__module__}.{sampler.__name__}", "seed": 7}
        (tmp_path / folder).mkdir()
        drawn.append(worker.ask(worker.open_study(space), space, None)[0].params)
    assert drawn[0] == drawn[1]


def test_a_running_trial_without_a_heartbeat_for_the_grace_period_fails(tmp_path: Path) -> None:
    space, _ = search_space(PARAMS, [])
    worker = search(tmp_path, n_trials=3, grace_period=60, heartbeat_interval=10)
    study = worker.open_study(space)
    alive, lost = worker.ask(study, space, None)[0], worker.ask(study, space, None)[0]
    lost.set_user_attr(HEARTBEAT, time.time() - 61)  # its worker was killed a minute ago
    worker.fail_stale_trials(study)
    states = {trial.number: trial.state for trial in study.get_trials()}
    assert states == {alive.number: TrialState.RUNNING, lost.number: TrialState.FAIL}


def lock_connections(url: str) -> list[int]:
    """The server processes of the search lock's connections (PostgreSQL's view of who is connected)."""
    engine = sqlalchemy.create_engine(database_url(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            query = "SELECT pid FROM pg_stat_activity WHERE application_name = :name"
            return [row[0] for row in connection.execute(sqlalchemy.text(query), {"name": LOCK_CONNECTION})]
    finally:
        engine.dispose()


def test_the_postgresql_lock_keeps_one_connection_until_closed(postgres_url: str) -> None:
    """Each draw takes the study's advisory lock on the worker's one connection, not on a new one."""
    space, _ = search_space(PARAMS, [])
    worker = search(Path("unused"), storage=postgres_url, study_name="one_lock_connection", n_trials=3)
    study = worker.open_study(space)
    connections = []
    for _ in range(3):
        assert len(worker.ask(study, space, None)) == 1
        connections.append(lock_connections(postgres_url))
    assert len(connections[0]) == 1 and connections == [connections[0]] * 3
    worker.lock.close()
    deadline = time.monotonic() + 5
    while lock_connections(postgres_url) and time.monotonic() < deadline:  # the server process takes a moment to go
        time.sleep(0.05)
    assert lock_connections(postgres_url) == []


def test_a_run_finds_its_running_trial_by_number(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="tiny", storage=storage)
    study.ask()
    running_trial(optuna.load_study(study_name="tiny", storage=storage), storage, study.ask().number).report(0.5, 1)
    assert [trial.intermediate_values for trial in study.get_trials()] == [{}, {1: 0.5}]


def test_no_private_optuna_attribute_is_read() -> None:
    """Optuna's storage and ids are reached through its public API (the storage the code opened), which its
    releases keep."""
    private = {"_storage", "_study_id", "_trial_id", "_cached_frozen_trial"}
    sources = [path for folder in ("src", "scripts", "hydra_plugins") for path in (REPO / folder).rglob("*.py")]
    read = [(path.name, node.attr) for path in sources for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr in private]  # fmt: skip
    assert read == []


def test_the_studys_counts_are_by_state_in_optunas_order(tmp_path: Path) -> None:
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"))
    for state in (TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE):
        study.tell(study.ask(), 1.0 if state == TrialState.COMPLETE else None, state=state)
    counts = trial_counts(study.get_trials())
    assert counts == {"complete": 2, "pruned": 1, "fail": 1} and list(counts) == ["complete", "pruned", "fail"]
    assert counted(counts) == "2 complete, 1 pruned, 1 fail" and counted({}) == "none"
