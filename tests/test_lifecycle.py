"""Runs that are hard to lose: kill-and-resume, atomic checkpoints, failed multirun jobs, divergence, unique dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.core.checkpoint import AtomicCheckpointIO
from tests.conftest import REPO, TINY_RUN, assert_one_line_error, run_cli

DETERMINISTIC = (
    "model=dropout_steplr",  # dropout, augmentation and an epoch-stepped StepLR: every kind of state to restore
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.max_epochs=4",
    "data.batch_size=8",
    "data.eval_batch_size=64",
    "logger=none",
    "seed=3",
)
TIMINGS = {"train_seconds", "test_seconds", "seconds_to_99_4", "resumed_from"}


def comparable(summary: dict) -> dict:
    """A summary without wall-clock figures and the resume marker: what must match between two runs."""
    rows = [{key: value for key, value in row.items() if "second" not in key and key != "since_start"}
            for row in summary["per_epoch"]]  # fmt: skip
    return {**{key: value for key, value in summary.items() if key not in TIMINGS}, "per_epoch": rows}


def start_cli(*overrides: str, data_dir: Path, stderr: Path) -> subprocess.Popen:
    """The CLI in the background, its stderr to a file (a pipe nobody reads would fill and stall it)."""
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "src.train", *overrides]
    with stderr.open("w") as sink:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=sink)


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tiny_mnist: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    reference = run_cli(*DETERMINISTIC, f"hydra.run.dir={tmp_path / 'reference'}", data_dir=tiny_mnist)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = start_cli(*DETERMINISTIC, f"runs_dir={runs}", data_dir=tiny_mnist, stderr=tmp_path / "killed.err")

    def in_epoch_three() -> bool:
        """Epoch 2's checkpoint is in place (renamed in whole, so always readable): the run is in epoch 3."""
        last = list(runs.glob("*/checkpoints/last.ckpt"))
        return bool(last) and torch.load(last[0], weights_only=False)["epoch"] == 1

    wait_for(in_epoch_three)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    (run_dir,) = runs.iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "summary.json").exists()

    resumed = run_cli(*DETERMINISTIC, f"runs_dir={runs}", "resume=true", data_dir=tiny_mnist)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list(runs.iterdir()) == [run_dir], "resume continues in the killed run's own dir"
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = json.loads((tmp_path / "reference" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("last.ckpt")
    assert comparable(summary) == comparable(expected)
    assert (run_dir / ".hydra" / "config.yaml").is_file(), "the first run's config is kept"
    assert len(list((run_dir / ".hydra").glob("*/config.yaml"))) == 1, "the resumed run's config sits beside it"


def test_resume_without_an_unfinished_run_says_so(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(*TINY_RUN, f"runs_dir={tmp_path}", "resume=true", data_dir=tiny_mnist)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: resume=true found no unfinished dropout_steplr_seed1 run under {tmp_path} (a run dir with "
        "checkpoints/last.ckpt and no summary.json); pass ckpt_path=... or start a new run without resume=true"
    ]
    assert list(tmp_path.iterdir()) == [], "a failed start leaves no run dir"


def test_checkpoint_of_another_net_is_refused_in_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    first = run_cli("model=baseline", *TINY_RUN, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'a'}",
                    data_dir=tiny_mnist)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    result = run_cli("model=dropout_steplr", *TINY_RUN, f"ckpt_path={ckpt}", f"runs_dir={tmp_path / 'runs'}",
                     data_dir=tiny_mnist)  # fmt: skip
    assert_one_line_error(
        result,
        f"error: ckpt_path={ckpt} does not fit this run's DropoutGapNet: it holds recipe baseline's "
        "BatchNormGapNet; use model=baseline",
    )


def test_checkpoints_are_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.ones(3)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"weights": torch.zeros(3), "broken": Unpicklable()}, target)
    assert torch.equal(torch.load(target)["weights"], torch.ones(3)), "the previous checkpoint is intact"
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"], "no partial file is left behind"


def test_failed_job_does_not_stop_the_multirun(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli("-m", "optimizer.lr=-1,0.01", *TINY_RUN, "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path}",
                     data_dir=tiny_mnist)  # fmt: skip
    assert result.returncode != 0
    assert (tmp_path / "1_dropout_steplr_seed1" / "summary.json").is_file(), "the good job ran after the failed one"
    assert (tmp_path / "0_dropout_steplr_seed1" / "FAILED").read_text() == "error: optimizer.lr=-1.0 must be > 0\n"
    assert (tmp_path / "results.md").is_file()
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 1 of 2 jobs failed: 0_dropout_steplr_seed1 (error: optimizer.lr=-1.0 must be > 0)"
    )


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny_mnist: Path, tmp_path: Path) -> None:
    # lr 0.01 for epoch 1, then StepLR multiplies it by 1e8: epoch 2 diverges.
    blow_up = ("scheduler.lr_scheduler.step_size=1", "scheduler.lr_scheduler.gamma=1e8", "trainer.max_epochs=3")
    result = run_cli(*TINY_RUN, *blow_up, f"hydra.run.dir={tmp_path}", data_dir=tiny_mnist)
    assert_one_line_error(result, "error: training diverged: loss is nan at epoch 2, step ")
    line = result.stderr.strip().splitlines()[-1]
    assert line.endswith(f"with lr 1e+06; last good checkpoint: {tmp_path / 'checkpoints' / 'last.ckpt'}")
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    assert not (tmp_path / "summary.json").exists()


def test_runs_started_together_get_their_own_dirs(tiny_mnist: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    quick = (*TINY_RUN, "trainer.max_epochs=1", "logger=none", f"runs_dir={runs}")
    jobs = [start_cli(*quick, data_dir=tiny_mnist, stderr=tmp_path / f"{job}.err") for job in range(2)]
    codes = [job.wait(timeout=300) for job in jobs]
    assert codes == [0, 0], [(tmp_path / f"{job}.err").read_text()[-2000:] for job in range(2)]
    dirs = sorted(runs.iterdir())
    assert len(dirs) == 2 and all((folder / "summary.json").is_file() for folder in dirs)


def test_a_dir_holding_a_run_is_never_reused(tiny_mnist: Path, tmp_path: Path) -> None:
    first = run_cli(*TINY_RUN, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={tmp_path}", data_dir=tiny_mnist)
    assert first.returncode == 0, first.stderr[-3000:]
    before = (tmp_path / "summary.json").read_bytes()
    again = run_cli(*TINY_RUN, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={tmp_path}", data_dir=tiny_mnist)
    assert again.returncode != 0
    assert again.stderr.strip().splitlines() == [
        f"error: {tmp_path} already holds another run's files; give hydra.run.dir a new folder"
    ]
    assert (tmp_path / "summary.json").read_bytes() == before
