"""The Optuna search on the command line, on tiny data: it maximises held-out accuracy and never looks at the test
set, prunes hopeless trials at an epoch's end (basic, joblib and submitit launchers), and shares one study between
workers (SQLite, journal file, PostgreSQL) with exactly n_trials trials, a killed worker's trial failed and the
study continued by the next."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import TINY_RUN, cli_in_process, compose_train, needs_sweep_extras, start_cli

QUIET = ("logger=none",)
SEARCH = ("hparams_search=optuna", "model=tiny", *TINY_RUN, "data.val_split=64", *QUIET)
# Trials at the tiny learning rate stay at chance: below 30 % held-out accuracy after their first epoch, they are
# pruned; at batch 8 the others learn the tiny digits within it.
HOPELESS = (
    "optimizer.lr=choice(0.05,1e-7)", "data.batch_size=8", "hydra/sweeper/sampler=random",
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "+hydra.sweeper.pruner.lower=30.0",
    "~hydra.sweeper.pruner.n_startup_trials", "hydra.sweeper.pruner.n_warmup_steps=0",
)  # fmt: skip


def study(storage: str, name: str = "tiny"):
    """The study as the search left it (Optuna is imported by the tests that have the sweep extras only)."""
    import optuna  # noqa: PLC0415

    from src.core.search import open_storage  # noqa: PLC0415

    return optuna.load_study(study_name=name, storage=open_storage(storage))


@needs_sweep_extras
def test_optuna_search_maximises_held_out_accuracy_and_continues(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two sessions in this process: the second continues the study up to n_trials in all."""
    search = (
        "hparams_search=optuna", "model=tiny", *(arg for arg in TINY_RUN if "data.batch_size" not in arg),
        "data.batch_size=choice(16,32)", "trainer.max_epochs=1", "data.val_split=64", *QUIET,
        f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    first = cli_in_process("src.train", *search, "hydra.sweeper.n_trials=3", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert first is None
    printed = capsys.readouterr().out
    assert "best trial of the study: val_acc" in printed and "optimizer.lr=" in printed
    summaries = [json.loads(path.read_text()) for path in tmp_path.rglob("summary.json")]
    assert len(summaries) == 3 and all(summary["test_acc"] is None for summary in summaries)  # test set untouched
    assert len({summary["per_epoch"][0]["lr"] for summary in summaries}) == 3
    trial_batches = {line for path in tmp_path.rglob("overrides.yaml") for line in path.read_text().splitlines()
                     if "data.batch_size" in line}  # fmt: skip
    assert trial_batches <= {"- data.batch_size=16", "- data.batch_size=32"}, trial_batches
    dropouts = [path.read_text().count("model.net.dropout=") for path in tmp_path.rglob("overrides.yaml")]
    assert dropouts == [1, 1, 1]  # from suggest_dropout: tiny's net has one

    error = cli_in_process("src.train", *search, "hydra.sweeper.n_trials=5", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error is None
    trials = study(f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 5  # n_trials counts the whole study
    assert len(list(tmp_path.rglob("summary.json"))) == 5  # the first session's trial dirs are kept


@needs_sweep_extras
def test_a_search_scores_a_recipe_that_skips_validation(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`speedrun` evaluates nothing during training (limit_val_batches=0); in a search its trials still get a
    held-out score instead of failing for want of val_acc."""
    error = cli_in_process("src.train", "hparams_search=optuna", "model=speedrun", *TINY_RUN, "trainer.max_epochs=1",
                           "data.val_split=64", "hydra.sweeper.n_trials=1", *QUIET, f"hydra.sweep.dir={tmp_path}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error is None
    (summary,) = [json.loads(path.read_text()) for path in tmp_path.rglob("summary.json")]
    assert summary["recipe"] == "speedrun" and summary["val_acc"] is not None and summary["test_acc"] is None
    (trial,) = study(f"sqlite:///{tmp_path / 'optuna.db'}", "speedrun").trials
    assert trial.state.name == "COMPLETE" and trial.value == summary["val_acc"]


@needs_sweep_extras
@pytest.mark.parametrize("search", ["optuna", "layout"])
def test_searches_evaluate_the_held_out_split_for_every_recipe(search: str) -> None:
    cfg = compose_train("model=speedrun", f"hparams_search={search}")
    assert cfg.trainer.limit_val_batches == 1.0 and cfg.data.val_split == 10_000 and cfg.test is False


@needs_sweep_extras
def test_layout_search_compares_shapes_at_the_recipes_budget(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe's net is replaced whole by the searched shape, widened to the recipe's budget (tiny: < 4,000)."""
    error = cli_in_process("src.train", "hparams_search=layout", "model=tiny", *TINY_RUN, "trainer.max_epochs=1",
                           "data.val_split=64", "hydra.sweeper.n_trials=2", *QUIET, f"hydra.sweep.dir={tmp_path}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error is None
    summaries = [json.loads(path.read_text()) for path in tmp_path.rglob("summary.json")]
    assert len(summaries) == 2 and all(summary["test_acc"] is None for summary in summaries)
    assert all(3_600 <= summary["params"] < 4_000 for summary in summaries)
    assert len({summary["net"] for summary in summaries}) == 2
    assert all(re.fullmatch(r"CompactGapNet\(stem=\[[\d, ]+\], squeeze=\d+, body=\[[\d, ]+\](, separable=\d)?\)",
                            summary["net"])
               for summary in summaries)  # fmt: skip
    lines = [line for path in tmp_path.rglob("overrides.yaml") for line in path.read_text().splitlines()]
    searched = {line.split("=")[0] for line in lines if "searched_net" in line}
    assert searched == {f"- searched_net.{key}" for key in
                        ("stem_convs", "body_convs", "stem_ratio", "squeeze_ratio", "growth", "separable")}  # fmt: skip


def trial_dirs(sweep_dir: Path) -> dict[int, Path]:
    """Trial number → its run dir (`<session>/<trial number>_<run name>`), over every worker's session."""
    return {int(path.name.split("_")[0]): path for path in sweep_dir.glob("*/*_tiny_seed*")}


@needs_sweep_extras
def test_a_hopeless_trial_is_pruned_at_an_epochs_end_and_keeps_its_figures(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = cli_in_process("src.train", *SEARCH, *HOPELESS, "trainer.max_epochs=3", "hydra.sweeper.n_trials=4",
                           f"hydra.sweep.dir={tmp_path}", data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error is None
    trials, dirs = study(f"sqlite:///{tmp_path / 'optuna.db'}").trials, trial_dirs(tmp_path)
    assert sorted(dirs) == [0, 1, 2, 3]
    for trial in trials:
        summary = json.loads((dirs[trial.number] / "summary.json").read_text())
        if summary["per_epoch"][0]["val_acc"] < 30:
            assert (trial.state.name, summary["pruned_at_epoch"], summary["epochs"]) == ("PRUNED", 1, 1)
            assert (dirs[trial.number] / "PRUNED").read_text().startswith("pruned at epoch 1 of 3: val acc ")
            assert trial.intermediate_values == {1: summary["val_acc"]}
        else:
            assert (trial.state.name, summary["pruned_at_epoch"], summary["epochs"]) == ("COMPLETE", None, 3)
            assert trial.value == summary["val_acc"] and not (dirs[trial.number] / "PRUNED").exists()
    counts = {state: sum(trial.state.name == state for trial in trials) for state in ("COMPLETE", "PRUNED")}
    assert counts["COMPLETE"] and counts["PRUNED"], "this seed draws both learning rates"
    assert f"study tiny: 4 trials: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned" in capsys.readouterr().out


@needs_sweep_extras
def test_trials_are_pruned_when_a_launcher_runs_them_in_other_processes(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """joblib's worker processes, two trials at a time (a submitit job reports the same way: the run opens the
    study from its storage); the search itself in this process."""
    joblib = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2")
    error = cli_in_process("src.train", *SEARCH, "optimizer.lr=1e-7", *HOPELESS[1:], "trainer.max_epochs=2",
                           "hydra.sweeper.n_trials=2", *joblib, f"hydra.sweep.dir={tmp_path}", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error is None
    assert [trial.state.name for trial in study(f"sqlite:///{tmp_path / 'optuna.db'}").trials] == ["PRUNED"] * 2
    assert all((path / "PRUNED").is_file() for path in trial_dirs(tmp_path).values())


def storage_of(kind: str, tmp_path: Path, postgres: str | None) -> str:
    return {"sqlite": f"sqlite:///{tmp_path / 'optuna.db'}", "postgresql": postgres}[kind]


@needs_sweep_extras
def test_a_study_in_a_journal_file_is_continued_by_the_next_worker(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna's journal file, for cluster file systems without a database server (its lock is a file beside it)."""
    storage = f"journal:{tmp_path / 'studies' / 'tiny.log'}"
    worker = (*SEARCH, "trainer.max_epochs=1", f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={tmp_path}")
    for n_trials in (1, 2):
        error = cli_in_process("src.train", *worker, f"hydra.sweeper.n_trials={n_trials}", data_dir=tiny_mnist,
                               monkeypatch=monkeypatch)  # fmt: skip
        assert error is None
    assert [trial.state.name for trial in study(storage).trials] == ["COMPLETE", "COMPLETE"]
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.slow
@needs_sweep_extras
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_workers_share_one_study_of_exactly_n_trials(
    kind: str, tiny_mnist: Path, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers started together on one study: every trial number is drawn once, by one of them, and the study
    stops at n_trials in all."""
    storage = storage_of(kind, tmp_path, request.getfixturevalue("postgres_url") if kind == "postgresql" else None)
    name = f"shared_{kind}"
    worker = (*SEARCH, "trainer.max_epochs=1", "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={storage}",
              f"hydra.sweeper.study_name={name}", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    other = start_cli(*worker, data_dir=tiny_mnist)  # the other worker, in a new interpreter at the same time
    assert cli_in_process("src.train", *worker, data_dir=tiny_mnist, monkeypatch=monkeypatch) is None
    _, stderr = other.communicate(timeout=300)
    assert other.returncode == 0, stderr[-2000:]
    trials = study(storage, name).trials
    assert [trial.number for trial in trials] == [0, 1, 2, 3]
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 4
    sessions = [sorted(int(path.name.split("_")[0]) for path in session.iterdir()) for session in tmp_path.iterdir()
                if session.is_dir() and re.fullmatch(r"[\d_-]+", session.name)]  # fmt: skip
    assert sorted(number for session in sessions for number in session) == [0, 1, 2, 3]


@pytest.mark.slow
@needs_sweep_extras
def test_a_killed_workers_trial_fails_and_a_restarted_worker_finishes_the_study(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    worker = (*SEARCH, "hydra.sweeper.n_trials=3", "hydra.sweeper.heartbeat_interval=0.5",
              "hydra.sweeper.grace_period=2", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    killed = start_cli(*worker, "trainer.max_epochs=1000", data_dir=tiny_mnist)  # its first trial would run for long
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/0_tiny_seed1/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.2)  # until the first trial has trained an epoch
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert [trial.state.name for trial in study(storage).trials] == ["RUNNING"]
    time.sleep(2.2)  # the grace period passes without a heartbeat
    error = cli_in_process("src.train", *worker, "trainer.max_epochs=1", data_dir=tiny_mnist, monkeypatch=monkeypatch)
    assert error is None
    assert [trial.state.name for trial in study(storage).trials] == ["FAIL", "COMPLETE", "COMPLETE"]


@needs_sweep_extras
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("hydra.sweeper.storage=postgresql://me:pw@127.0.0.1:1/db",
         "error: hydra.sweeper.storage=postgresql://me:***@127.0.0.1:1/db cannot be opened: "),
        ("hydra.sweeper.n_trials=0", "error: hydra.sweeper.n_trials=0 must be a whole number >= 1"),
        ("hydra.sweeper.pruner.n_startup_trials=-1",
         "error: hydra.sweeper.pruner.n_startup_trials=-1 is refused by optuna.pruners.MedianPruner: "),
    ],
)  # fmt: skip
def test_a_search_that_cannot_start_is_one_line(
    setting: str, message: str, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = cli_in_process("src.train", *SEARCH, setting, f"hydra.sweep.dir={tmp_path}", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error is not None and error.startswith(message) and "\n" not in error and "pw" not in error
    assert not list(tmp_path.rglob("summary.json"))
