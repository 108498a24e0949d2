"""A signal's clean stop (src.core.interrupt): what the handlers record and pass on, and the command that continues."""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

import pytest

from src.core.interrupt import Interrupted, StopRequests


def test_the_first_signal_is_recorded_and_a_second_ctrl_c_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), StopRequests() as stop:
        signal.raise_signal(signal.SIGUSR1)  # outside Lightning's fit: recorded, nothing else
        assert stop.signum == signal.SIGUSR1
        signal.raise_signal(signal.SIGTERM)  # a later stop signal changes nothing
        assert stop.signum == signal.SIGUSR1
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN, "stopped and on its way out: Ctrl-C is ignored"
    signal.signal(signal.SIGINT, before)


def test_the_handlers_come_back_and_a_launchers_signal_is_handed_over() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
        with StopRequests() as stop:
            signal.raise_signal(signal.SIGUSR2)
            assert stop.signum == signal.SIGUSR2 and received == [], "not yet: the run stops cleanly first"
            stop.hand_over()
            assert received == [signal.SIGUSR2]
        assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_the_command_continues_the_run_or_the_sweep_or_starts_the_run_again() -> None:
    """With no checkpoint a run has nothing to continue: the same command starts it again, less the run dir it used
    (a new run refuses a dir with another run's files). A sweep continues either way (the job starts again)."""
    run = Interrupted(signal.SIGTERM, "interrupted", Path("/runs/r 1"), None, Path("/runs/r 1/checkpoints/last.ckpt"))
    assert run.code == 143
    args = ["model=tiny", "ckpt_path=/x.ckpt", "hydra.run.dir=/old", "seed=2"]
    assert shlex.split(run.line(args).removeprefix("interrupted; continue with: ")) == [
        "python", "-m", "src.train", "model=tiny", "seed=2", "resume=true", "hydra.run.dir=/runs/r 1"
    ]  # fmt: skip
    none_kept = Interrupted(signal.SIGTERM, "interrupted", Path("/runs/r 1"), None, None)
    assert none_kept.line(args) == (
        "interrupted; the same command starts it again, in a new run dir: python -m src.train model=tiny "
        "ckpt_path=/x.ckpt seed=2"
    )
    for checkpoint in (None, Path("/sweep/1_tiny_seed2/checkpoints/last.ckpt")):
        sweep = Interrupted(signal.SIGINT, "interrupted", Path("/sweep/1_tiny_seed2"), Path("/sweep"), checkpoint)
        assert sweep.code == 130
        assert sweep.line(["-m", "seed=1,2", "hydra.sweep.dir=old"]) == (
            "interrupted; continue with: python -m src.train -m seed=1,2 hydra.sweep.dir=/sweep"
        )


def test_the_command_that_continues_a_search_leaves_its_database_password_out() -> None:
    """The storage's URL as it still works, with the password to come from libpq's environment or password file."""
    search = Interrupted(signal.SIGINT, "interrupted", Path("/sweep/0_tiny_seed1"), Path("/sweep"), None)
    storage = "hydra.sweeper.storage=postgresql://me:secret@db.cluster:5432/studies"
    line = search.continue_command(["hparams_search=optuna", storage])
    assert "secret" not in line
    assert line == (
        "python -m src.train hparams_search=optuna hydra.sweeper.storage=postgresql://me@db.cluster:5432/studies "
        "hydra.sweep.dir=/sweep (the storage's password is left out: give it in PGPASSWORD or ~/.pgpass)"
    )
    quoted = "hydra.sweeper.storage='postgresql://me:secret@db/studies?sslmode=require'"  # `=` needs Hydra's quotes
    assert shlex.split(search.continue_command([quoted]).split(" (the storage")[0])[3] == (
        "hydra.sweeper.storage='postgresql://me@db/studies?sslmode=require'"
    )
    for storage in ("sqlite:////sweep/optuna.db", "postgresql:///studies?host=/run/postgresql"):  # no password
        setting = f"hydra.sweeper.storage={storage}"
        assert shlex.split(search.continue_command([setting])) == [
            "python", "-m", "src.train", setting, "hydra.sweep.dir=/sweep"
        ]  # fmt: skip


def test_a_signal_ignored_at_the_start_stays_ignored() -> None:
    """`nohup`, or a shell's background job: SIGINT is ignored before the run starts, and stays so."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequests() as stop:
            signal.raise_signal(signal.SIGINT)
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN and stop.signum is None
    finally:
        signal.signal(signal.SIGINT, before)
