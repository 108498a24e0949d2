"""One MNIST run (src.mnist.run), hard to lose: kill-and-resume and a signal's clean stop to the uninterrupted result
(also for a signal before Lightning's handler is in place, and for a run without checkpoints, which starts again),
a multirun run again in its sweep dir continuing where it stopped (with checkpoints or with its jobs' saved configs),
a resume under changed settings refused, divergence stopped with the last good checkpoint kept; what a run that
evaluates nothing reports; the strategies a multirun cannot run."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from src.core.rundirs import is_finished
from src.mnist.run import relaunches_the_command
from tests.helpers import TINY_RUN, TINY_TRAIN, TRAINED_RUN, cli_in_process, comparable, start_cli, train_in_process

DETERMINISTIC = (
    "model=dropout_steplr",  # dropout, augmentation and an epoch-stepped StepLR: every kind of state to restore
    "scheduler.lr_scheduler.step_size=2",  # the lr drops between epochs 2 and 3: across the kill
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.max_epochs=3",
    "data.batch_size=16",
    "data.eval_batch_size=80",
    "logger=none",
    "seed=3",
)
STEPS_PER_EPOCH = TINY_TRAIN // 16  # DETERMINISTIC's batches


def wait_for(condition, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"condition not met before the process ended (status {process.poll()})")
        time.sleep(0.02)


class SignalAt(pl.Callback):
    """Sends `signum` to this process after step `step` of a run (step 0: as fit starts, before Lightning's SIGTERM
    handler is in place), the `occurrence`-th time any run of the test gets there (counted in `counter`, a file, so
    that a multirun's later job or a continued run can be the one)."""

    def __init__(self, signum: int, step: int, counter: str, occurrence: int = 1) -> None:
        self.signum, self.step, self.counter, self.occurrence = signum, step, Path(counter), occurrence

    def on_fit_start(self, trainer: pl.Trainer, *args) -> None:
        if self.step == 0:
            self._count_and_send()

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            self._count_and_send()

    def _count_and_send(self) -> None:
        seen = int(self.counter.read_text()) + 1 if self.counter.is_file() else 1
        self.counter.write_text(str(seen))
        if seen == self.occurrence:
            signal.raise_signal(self.signum)


class HoldAt(pl.Callback):
    """Holds a run still after step `step` (writing `held` then), for a test to signal it there however long its own
    work takes; let go after `seconds`, so that a failed test does not leave it waiting."""

    def __init__(self, step: int, held: str, seconds: float = 120.0) -> None:
        self.step, self.held, self.seconds = step, Path(held), seconds

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            self.held.write_text(str(self.step))
            time.sleep(self.seconds)


def signal_at(signum: int, step: int, counter: Path, occurrence: int = 1) -> tuple[str, ...]:
    """The overrides that add `SignalAt` to a run's callbacks."""
    return (f"+callbacks.signal_at._target_={SignalAt.__module__}.SignalAt", f"+callbacks.signal_at.signum={signum}",
            f"+callbacks.signal_at.step={step}", f"+callbacks.signal_at.counter={counter}",
            f"+callbacks.signal_at.occurrence={occurrence}")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGKILL", "SIGINT twice"])
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    stop: str, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stopped run is a real process (SIGKILL: no handler runs; a second Ctrl-C right after the first: no waiting
    for the step to end, and the exit says so); the uninterrupted reference and the resumed run are the same code in
    this process, on the same thread count, so every figure must match exactly."""
    runs, held = tmp_path / "runs", tmp_path / "held"
    hold = (f"+callbacks.hold._target_={HoldAt.__module__}.HoldAt", f"+callbacks.hold.step={STEPS_PER_EPOCH + 5}",
            f"+callbacks.hold.held={held}")  # fmt: skip
    killed = start_cli(*DETERMINISTIC, *hold, f"runs_dir={runs}", data_dir=tiny_mnist, stderr=tmp_path / "killed.err")
    expected = train_in_process(*DETERMINISTIC, run_dir=tmp_path / "reference", data_dir=tiny_mnist)
    try:
        wait_for(held.is_file, killed)  # in epoch 2, its 5th step done: epoch 1's checkpoint is in place
    finally:
        for signum in [signal.SIGKILL] if stop == "SIGKILL" else [signal.SIGINT, signal.SIGINT]:
            killed.send_signal(signum)
            time.sleep(0.05)
    stderr = (tmp_path / "killed.err").read_text()
    assert killed.wait() == (-signal.SIGKILL if stop == "SIGKILL" else 128 + signal.SIGINT), stderr[-3000:]
    (run_dir,) = runs.iterdir()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0, "stopped in epoch 2"
    assert not is_finished(run_dir)
    if stop != "SIGKILL":
        assert "Traceback" not in stderr
        assert json.loads((run_dir / "summary.json").read_text())["interrupted"]["signal"] == "SIGINT"
        assert stderr.strip().splitlines()[-1].endswith(f"resume=true hydra.run.dir={run_dir}")

    with warnings.catch_warnings(record=True) as caught:
        error = cli_in_process("src.train", *DETERMINISTIC, f"runs_dir={runs}", "resume=true", data_dir=tiny_mnist,
                               monkeypatch=monkeypatch)  # fmt: skip
    assert error is None
    assert not [warning for warning in caught if "not empty" in str(warning.message)], "the dir is its own: no warning"
    assert list(runs.iterdir()) == [run_dir], "resume continues in the killed run's own dir"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert [row["lr"] for row in summary["per_epoch"]] == [0.01, 0.0025, 0.0025]  # the lr at each epoch's end
    assert comparable(summary) == comparable(expected)
    assert (run_dir / ".hydra" / "config.yaml").is_file(), "the first run's config is kept"
    assert len(list((run_dir / ".hydra").glob("*/config.yaml"))) == 1, "the resumed run's config sits beside it"


def dispositions() -> dict[int, object]:
    """Every signal's handler in this process, as Python sees it."""
    return {signum: signal.getsignal(signum) for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}}


@pytest.fixture
def restored_sigint() -> Iterator[None]:
    """A run stopped by a signal ignores Ctrl-C on its way out (the process is ending): not this test process's."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.mark.usefixtures("restored_sigint")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_stops_the_run_after_the_step_and_says_how_to_continue(
    signum: int, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """In this process: the signal arrives during step 13 (epoch 2 of 10 steps); the run ends that step, records the
    interruption and the figures so far, exits 128 + the signal, and its line's command continues it."""
    run_dir = tmp_path / "run"
    args = (*TINY_RUN, "logger=none", *signal_at(signum, 13, tmp_path / "count"))
    before = dispositions()
    error = cli_in_process("src.train", *args, f"hydra.run.dir={run_dir}", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error == str(128 + signum)
    assert dispositions() == {**before, signal.SIGINT: signal.SIG_IGN}, "only Ctrl-C ignored, on the way out"
    signal.signal(signal.SIGINT, before[signal.SIGINT])
    summary = json.loads((run_dir / "summary.json").read_text())
    name = signal.Signals(signum).name
    last = run_dir / "checkpoints" / "last.ckpt"
    assert summary["interrupted"] == {"signal": name, "epoch": 2, "step": 13, "checkpoint": str(last)}
    assert [row["epoch"] for row in summary["per_epoch"]] == [1] and summary["test_acc"] is None
    assert summary["pruned_at_epoch"] is None, "an interrupted summary has every key a finished one has"
    assert torch.load(last, weights_only=True)["epoch"] == 0 and not is_finished(run_dir)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted by {name} in epoch 2 at step 13; {last} holds epoch 1; ")
    command = line.split("continue with: ")[1].split()
    assert command[:3] == ["python", "-m", "src.train"] and command[-2:] == ["resume=true", f"hydra.run.dir={run_dir}"]

    assert cli_in_process("src.train", *command[3:], data_dir=tiny_mnist, monkeypatch=monkeypatch) is None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "interrupted" not in summary and summary["epochs"] == 2 and is_finished(run_dir)
    assert summary["resumed_from"] == str(last)
    assert dispositions() == before, "no handler of Lightning's or the run's left behind"


@pytest.mark.usefixtures("restored_sigint")
def test_a_signal_before_lightnings_handler_is_in_place_stops_the_run_at_the_next_batch(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """SIGTERM as fit starts, when the run takes stop signals but Lightning's handler is not installed yet: recorded,
    then passed to Lightning at the next batch's end (the sanity check's first), so the run stops there instead of
    training to the end. No checkpoint to continue from: the line gives the command that starts it again, less the
    run dir it used."""
    run_dir = tmp_path / "run"
    args = (*TINY_RUN, "logger=none", *signal_at(signal.SIGTERM, 0, tmp_path / "count"))
    error = cli_in_process("src.train", *args, f"hydra.run.dir={run_dir}", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error == str(128 + signal.SIGTERM)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] == {"signal": "SIGTERM", "epoch": 1, "step": 0, "checkpoint": None}
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted by SIGTERM in epoch 1 at step 0; it kept no checkpoint to continue from (no epoch had finished); "
        f"{run_dir / 'summary.json'} records the figures so far; the same command starts it again, in a new run dir: "
        f"{shlex.join(['python', '-m', 'src.train', *args])}"
    )


@pytest.mark.usefixtures("restored_sigint")
def test_a_run_that_writes_no_checkpoint_says_the_same_command_starts_it_again(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The speedrun writes no checkpoint: stopped in epoch 2, it has nothing to continue from, and the command its
    line gives starts it again in a new run dir, to the end."""
    runs = tmp_path / "runs"
    args = ("model=speedrun", *TINY_RUN, f"runs_dir={runs}", *signal_at(signal.SIGTERM, 13, tmp_path / "count"))
    assert cli_in_process("src.train", *args, data_dir=tiny_mnist, monkeypatch=monkeypatch) == "143"
    (stopped,) = runs.iterdir()
    interrupted = json.loads((stopped / "summary.json").read_text())["interrupted"]
    assert interrupted == {"signal": "SIGTERM", "epoch": 2, "step": 13, "checkpoint": None}
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "; it kept no checkpoint to continue from (its settings write none); " in line
    command = line.split("; the same command starts it again, in a new run dir: ")[1]
    assert command == shlex.join(["python", "-m", "src.train", *args])

    assert cli_in_process("src.train", *shlex.split(command)[3:], data_dir=tiny_mnist, monkeypatch=monkeypatch) is None
    (again,) = set(runs.iterdir()) - {stopped}
    assert is_finished(again) and json.loads((again / "summary.json").read_text())["epochs"] == 2


@pytest.mark.usefixtures("restored_sigint")
def test_a_multirun_run_again_in_its_sweep_dir_continues_where_it_stopped(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM in job 1's second epoch stops the sweep; the same command again keeps job 0 as it was, continues job 1
    from its checkpoint to the uninterrupted result, starts job 2, and writes the table over all three. Run again
    under other settings, every job is refused in one line."""
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=1,2,3", *TINY_RUN, "trainer.deterministic=true", "logger=none", f"hydra.sweep.dir={sweep}",
            *signal_at(signal.SIGTERM, 13, tmp_path / "count", occurrence=2))  # fmt: skip
    error = cli_in_process("src.train", *args, data_dir=tiny_mnist, monkeypatch=monkeypatch)
    assert error == str(128 + signal.SIGTERM)
    job0, job1, job2 = (sweep / f"{num}_dropout_steplr_seed{num + 1}" for num in range(3))
    assert is_finished(job0) and not is_finished(job1) and not job2.exists()
    assert not (sweep / "results.md").exists(), "no table of a sweep that stopped"
    job0_files = {path: path.read_bytes() for path in [job0 / "summary.json", *job0.glob("checkpoints/*")]}

    assert cli_in_process("src.train", *args, data_dir=tiny_mnist, monkeypatch=monkeypatch) is None
    assert {path: path.read_bytes() for path in job0_files} == job0_files, "the finished job is kept as it was"
    continued = json.loads((job1 / "summary.json").read_text())
    assert continued["resumed_from"] == str(job1 / "checkpoints" / "last.ckpt")
    expected = train_in_process(*args[2:-6], "seed=2", run_dir=tmp_path / "reference", data_dir=tiny_mnist)
    assert comparable(continued) == comparable(expected)
    assert is_finished(job2) and json.loads((job2 / "summary.json").read_text())["resumed_from"] is None
    assert '"1,2,3"' in (sweep / "results.csv").read_text(), "the table is over the three seeds"

    error = cli_in_process("src.train", *args, "optimizer.lr=0.02", data_dir=tiny_mnist, monkeypatch=monkeypatch)
    assert error is not None and error.startswith("error: 3 of 3 jobs failed: 0_dropout_steplr_seed1 (error: the run")
    assert "started with optimizer.lr=0.01 (now 0.02)" in error
    assert {path: path.read_bytes() for path in job0_files} == job0_files


@pytest.mark.usefixtures("restored_sigint")
def test_a_sweep_without_checkpoints_run_again_compares_each_jobs_saved_settings(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The speedrun writes no checkpoint, so its jobs' settings are compared with their dirs' `.hydra/config.yaml`
    (a setting given by a resolver compared as its text, never refused for it): run again under another lr, the
    finished job and the stopped one are both refused in one line; run again as it was, the finished job is kept and
    the stopped one starts again."""
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=1,2", "model=speedrun", *TINY_RUN, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}",
            "optimizer.momentum='${oc.decode:${oc.env:TINY_MOMENTUM,0.9}}'",
            *signal_at(signal.SIGTERM, 3, tmp_path / "count", occurrence=2))  # fmt: skip
    assert cli_in_process("src.train", *args, data_dir=tiny_mnist, monkeypatch=monkeypatch) == "143"
    job0, job1 = sweep / "0_speedrun_seed1", sweep / "1_speedrun_seed2"
    assert is_finished(job0) and not is_finished(job1) and not list(sweep.rglob("*.ckpt"))
    kept = (job0 / "summary.json").read_bytes()

    error = cli_in_process("src.train", *args, "optimizer.lr=0.02", data_dir=tiny_mnist, monkeypatch=monkeypatch)
    assert error is not None and error.startswith(f"error: 2 of 2 jobs failed: {job0.name} (error: the run in {job0}")
    assert "started with optimizer.lr=0.06 (now 0.02)" in error and f"{job1.name} (error: the run in {job1}" in error
    assert (job0 / "summary.json").read_bytes() == kept and not is_finished(job1)

    assert cli_in_process("src.train", *args, data_dir=tiny_mnist, monkeypatch=monkeypatch) is None
    assert (job0 / "summary.json").read_bytes() == kept, "the finished job is kept as it was"
    assert is_finished(job1) and json.loads((job1 / "summary.json").read_text())["resumed_from"] is None


def test_resume_without_an_unfinished_run_says_so(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    error = cli_in_process("src.train", *TINY_RUN, f"runs_dir={tmp_path}", "resume=true", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        f"error: resume=true found no unfinished dropout_steplr_seed1 run under {tmp_path} (a run dir with "
        "checkpoints/last.ckpt and no summary.json); pass ckpt_path=... or start a new run without resume=true"
    )
    assert list(tmp_path.iterdir()) == [], "a failed start leaves no run dir"


@pytest.mark.parametrize(
    ("continues", "changed", "started_with"),
    [
        ("resume=true", ("data.batch_size=16", "optimizer.momentum=0.8", "model.test_time_shifts=[]"),
         "data.batch_size=8 (now 16); optimizer.momentum=0.9 (now 0.8)"),
        ("ckpt_path=RUN/checkpoints/last.ckpt", ("callbacks.ema=null", "model.label_smoothing=0"),
         "callbacks.ema._target_=src.mnist.callbacks.WarmupEMA (now null); callbacks.ema.decay=0.999 (now null)"),
    ],
)  # fmt: skip
def test_resume_under_settings_changed_since_the_start_names_them(
    continues: str, changed: tuple[str, ...], started_with: str, trained_run: Path, tiny_mnist: Path, tmp_path: Path,
    monkeypatch,
) -> None:  # fmt: skip
    """A recipe file edited between a run's start and its resume (as `tiny`'s unaugmented epochs went from 2 to 4)
    must not continue the run silently under other settings: a changed value or a part switched off is named. What
    does not change what a run learns may differ: where the data lives, evaluation's shifts, 0 for 0.0."""
    run_dir = tmp_path / "2026-12-01_00-00-00-000000-1_record_seed1"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "summary.json").unlink()  # unfinished: a last checkpoint and no summary
    other_data = tmp_path / "mnist_elsewhere"
    shutil.copytree(tiny_mnist, other_data)
    continue_it = continues.replace("RUN", str(run_dir))
    error = cli_in_process("src.train", *TRAINED_RUN, *changed, f"runs_dir={tmp_path}", continue_it,
                           data_dir=other_data, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        f"error: the run in {run_dir} started with {started_with}: resume it under those settings (its first "
        f"command's overrides are in {run_dir / '.hydra' / 'overrides.yaml'}, and a recipe file edited since must be "
        "restored), or start a new run"
    )
    assert not (run_dir / "summary.json").exists()
    assert not [path for path in (run_dir / ".hydra").iterdir() if path.is_dir()], "no config of the refused resume"


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    tiny_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    # lr 0.01 for epoch 1, then StepLR multiplies it by 1e8: epoch 2 diverges.
    blow_up = ("scheduler.lr_scheduler.step_size=1", "scheduler.lr_scheduler.gamma=1e8", "trainer.max_epochs=3")
    error = cli_in_process("src.train", *TINY_RUN, *blow_up, "logger=none", f"hydra.run.dir={tmp_path}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error is not None and error.startswith("error: training diverged: loss is nan at epoch 2, step ")
    assert error.endswith(f"with lr 1e+06; last good checkpoint: {tmp_path / 'checkpoints' / 'last.ckpt'}")
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not (tmp_path / "summary.json").exists()


def test_a_run_that_evaluates_nothing_says_so(tiny_mnist: Path, tmp_path: Path) -> None:
    """test=false and no validation epoch (the speedrun's schedule on a held-out split): a line, not a logging error,
    and no warning that the best checkpoint's `val/acc` is missing (that checkpoint is left out)."""
    overrides = ("model=tiny", *TINY_RUN, "trainer.max_epochs=1", "trainer.limit_val_batches=0", "test=false")
    with warnings.catch_warnings(record=True) as caught:
        summary = train_in_process(*overrides, "optimized_metric=val_acc", run_dir=tmp_path, data_dir=tiny_mnist)
    assert summary["val_acc"] is None and summary["test_acc"] is None
    assert "nothing evaluated (test=false, no validation epoch)" in (tmp_path / "train.log").read_text()
    assert not [warning for warning in caught if "monitored key" in str(warning.message)]


def test_an_epoch_without_validation_reports_none_not_the_last_figures(tiny_mnist: Path, tmp_path: Path) -> None:
    """trainer.check_val_every_n_epoch=2: epochs 1 and 3 have no held-out figures of their own (epoch 3 must not
    repeat epoch 2's), so the summary's final val_acc is None and its best epoch is 2."""
    overrides = ("model=tiny", *TINY_RUN, "trainer.max_epochs=3", "trainer.limit_train_batches=2", "test=false",
                 "optimized_metric=best_val_acc", "trainer.check_val_every_n_epoch=2")  # fmt: skip
    summary = train_in_process(*overrides, run_dir=tmp_path, data_dir=tiny_mnist)
    assert [row["val_acc"] is None for row in summary["per_epoch"]] == [True, False, True]
    assert summary["val_acc"] is None and summary["best_epoch"] == 2


@pytest.mark.parametrize(("strategy", "devices", "relaunches"), [("ddp", 2, True), ("ddp", 1, False),
                                                                   ("ddp_spawn", 2, False)])  # fmt: skip
def test_only_a_strategy_that_runs_the_command_again_is_refused_in_a_multirun(
    strategy: str, devices: int, relaunches: bool
) -> None:
    """Decided from the trainer Lightning builds, not from the strategy's name: `ddp_spawn` starts its processes from
    this one, and DDP on one device starts none."""
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False)
    assert relaunches_the_command(trainer) is relaunches
