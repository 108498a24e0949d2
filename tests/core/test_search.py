"""The search's parts (src.core.search) in this process: the search space from the config and the command line,
storages and their one-line errors, the settings refused before anything starts, a study that exists with another
direction or search space, trials past n_trials never drawn, stale trials failed."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from src.core.errors import UserError
from src.core.search import HEARTBEAT, Search, open_storage, search_space, shown

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


def test_shown_hides_only_a_password() -> None:
    assert shown("postgresql://me:pw@db.example:5432/studies") == "postgresql://me:***@db.example:5432/studies"
    assert shown("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0 must be a whole number >= 1"),
        ({"n_jobs": -1}, "hydra.sweeper.n_jobs=-1 must be a whole number >= 1"),
        ({"direction": "up"}, "hydra.sweeper.direction=up is not one of maximize, minimize"),
        ({"heartbeat_interval": 60, "grace_period": 30}, "hydra.sweeper.heartbeat_interval=60 must be > 0 and below"),
    ],
)
def test_bad_settings_are_refused_before_a_study_is_touched(settings: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=message):
        search(tmp_path, **settings).sweep([])
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
