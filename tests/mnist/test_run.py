"""One MNIST run (src.mnist.run), hard to lose: kill-and-resume to the uninterrupted result, a resume under changed
settings refused, divergence stopped with the last good checkpoint kept; what a run that evaluates nothing reports;
the strategies a multirun cannot run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from src.mnist.run import relaunches_the_command
from tests.helpers import REPO, THREADS, TINY_RUN, TRAINED_RUN, cli_in_process, train_in_process

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
NOT_COMPARED = {"train_seconds", "test_seconds", "seconds_to_99_4", "resumed_from", "overrides"}


def comparable(summary: dict) -> dict:
    """A summary without wall-clock figures, the resume marker and the command line: what must match."""
    rows = [{key: value for key, value in row.items() if "second" not in key and key != "since_start"}
            for row in summary["per_epoch"]]  # fmt: skip
    return {**{key: value for key, value in summary.items() if key not in NOT_COMPARED}, "per_epoch": rows}


def start_cli(*overrides: str, data_dir: Path, stderr: Path) -> subprocess.Popen:
    """The CLI in the background, its stderr to a file (a pipe nobody reads would fill and stall it)."""
    env = {**os.environ, "DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(THREADS)}
    command = [sys.executable, "-m", "src.train", *overrides]
    with stderr.open("w") as sink:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=sink)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"condition not met before the process ended (status {process.poll()})")
        time.sleep(0.02)


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The killed run is a real process (SIGKILL: no handler runs); the uninterrupted reference and the resumed run
    are the same code in this process, on the same thread count, so every figure must match exactly."""
    runs = tmp_path / "runs"
    killed = start_cli(*DETERMINISTIC, f"runs_dir={runs}", data_dir=tiny_mnist, stderr=tmp_path / "killed.err")
    expected = train_in_process(*DETERMINISTIC, run_dir=tmp_path / "reference", data_dir=tiny_mnist)

    def in_epoch_two() -> bool:
        """Epoch 1's checkpoint is in place (renamed in whole, so always readable): the run is in epoch 2."""
        last = list(runs.glob("*/checkpoints/last.ckpt"))
        return bool(last) and torch.load(last[0], weights_only=True)["epoch"] == 0

    try:
        wait_for(in_epoch_two, killed)
    finally:
        killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, (tmp_path / "killed.err").read_text()[-3000:]
    (run_dir,) = runs.iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "summary.json").exists()

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
