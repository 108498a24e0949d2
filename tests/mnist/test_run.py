"""Runs that are hard to lose: kill-and-resume, atomic checkpoints, failed multirun jobs, divergence, unique dirs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from src.core.checkpoint import AtomicCheckpointIO, settings_with_defaults
from src.mnist.run import learning_changes
from tests.conftest import REPO, THREADS, TINY_RUN, TRAINED_RUN, cli_in_process, compose_train, train_in_process

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


def test_a_resumed_run_keeps_the_best_validation_accuracy_so_far() -> None:
    """`val/acc_best` is a metric, kept outside the state_dict: the checkpoint carries it, so a resumed run's curve
    goes on from the best epoch before the interruption instead of starting again from its first epoch."""
    before, after = (instantiate(compose_train("model=tiny").model) for _ in range(2))
    before.val_acc_best(torch.tensor(0.981))
    before.val_acc_best(torch.tensor(0.975))
    checkpoint: dict = {}
    before.on_save_checkpoint(checkpoint)
    after.on_load_checkpoint(checkpoint)
    after.on_train_start()
    after.val_acc_best(torch.tensor(0.97))
    assert after.val_acc_best.compute().item() == pytest.approx(0.981)


@pytest.mark.parametrize("continue_it", ["resume=true", "ckpt_path=any.ckpt"])
def test_continuing_a_run_inside_a_multirun_is_one_line(
    continue_it: str, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A continued run writes into its own dir, which a sweep's job dirs cannot be: refused before anything is built."""
    error = cli_in_process("src.train", "-m", continue_it, *TINY_RUN, f"hydra.sweep.dir={tmp_path}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        "error: 1 of 1 jobs failed: 0_dropout_steplr_seed1 (error: resume=true and ckpt_path continue one run; run "
        "them without -m)"
    )
    assert not (tmp_path / "0_dropout_steplr_seed1" / "checkpoints").exists()


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


def test_a_setting_added_to_the_project_since_a_run_started_counts_as_a_change_only_when_switched_on() -> None:
    """`model.net.separable` came after `learning` did: a run started without it learned with none separable."""
    saved = {"model.net": {"model.net.body": "[14,16,16]"}}
    assert learning_changes(saved, {"model.net": {"model.net.body": "[14,16,16]", "model.net.separable": "0"}}) == []
    switched_on = {"model.net": {"model.net.body": "[14,16,16]", "model.net.separable": "2"}}
    assert learning_changes(saved, switched_on) == ["model.net.separable unset, i.e. off (now 2)"]


@pytest.mark.parametrize(("net", "run"), [("model=dropout_steplr", "DropoutGapNet"),
                                         ("model.net.body=[14,16,18]", "CompactGapNet"),
                                         ("model.net.separable=3", "CompactGapNet")])  # fmt: skip
def test_checkpoint_of_another_net_is_refused_in_one_line(
    net: str, run: str, trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    """Another recipe's net, or the same recipe's with other widths (a layout search's trial) or other separable
    convs (`record`'s last two are; a trial's may be all, or none): the line names every setting that rebuilds the
    checkpoint's."""
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    error = cli_in_process("src.train", "model=record", net, *TINY_RUN, f"ckpt_path={ckpt}",
                           f"runs_dir={tmp_path}", data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        f"error: ckpt_path={ckpt} does not fit this run's {run}: it holds recipe record's CompactGapNet; "
        "use model=record model.net.stem=[10,16] model.net.squeeze=10 model.net.body=[16,48,50] model.net.separable=2"
    )
    assert list(tmp_path.iterdir()) == [], "a failed start leaves no run dir"


def test_checkpoint_from_before_the_widths_were_stored_names_its_recipe(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["run_config"]["net"]
    ckpt = tmp_path / "old.ckpt"
    torch.save(checkpoint, ckpt)
    error = cli_in_process("src.train", "model=dropout_steplr", *TINY_RUN, f"ckpt_path={ckpt}",
                           f"runs_dir={tmp_path / 'runs'}", data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        f"error: ckpt_path={ckpt} does not fit this run's DropoutGapNet: it holds recipe record's CompactGapNet; "
        "use model=record"
    )
    assert not any((tmp_path / "runs").glob("*")), "a failed start leaves no run dir"


def test_a_hint_names_the_settings_a_checkpoint_predates_at_their_defaults() -> None:
    """A checkpoint from before `separable` existed held a full-conv net: its hint must say so, or following it under
    `tiny` (separable now) builds another net and is refused again."""
    stored = {"stem": [8, 10], "squeeze": 8, "body": [10, 10, 12]}
    assert settings_with_defaults("src.mnist.nets.CompactGapNet", stored) == {**stored, "separable": 0}
    no_body = {"stem": [8, 10], "squeeze": 8}
    assert settings_with_defaults("src.mnist.nets.CompactGapNet", no_body) == no_body, "no such net: as stored"


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


def test_failed_job_does_not_stop_the_multirun(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    error = cli_in_process(
        "src.train", "-m", "optimizer.lr=-1,0.01", *TINY_RUN, "trainer.max_epochs=1", "logger=none",
        f"hydra.sweep.dir={tmp_path}", data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert (tmp_path / "1_dropout_steplr_seed1" / "summary.json").is_file(), "the good job ran after the failed one"
    assert (tmp_path / "0_dropout_steplr_seed1" / "FAILED").read_text() == "error: optimizer.lr=-1.0 must be > 0\n"
    assert (tmp_path / "results.md").is_file()
    assert error == "error: 1 of 2 jobs failed: 0_dropout_steplr_seed1 (error: optimizer.lr=-1.0 must be > 0)"
    # Another multirun into the same dir (as a search's next session is) answers for its own jobs only.
    error = cli_in_process(
        "src.train", "-m", "seed=2", *TINY_RUN, "trainer.max_epochs=1", "logger=none", f"hydra.sweep.dir={tmp_path}",
        data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert error is None and (tmp_path / "0_dropout_steplr_seed2" / "summary.json").is_file()


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


def test_runs_started_together_get_their_own_dirs(tmp_path: Path) -> None:
    """A new run's dir is `<time to the microsecond>-<pid>_<run name>`: two processes never share a pid, so runs
    started in the same microsecond still get their own dirs."""
    name = Path(compose_train(f"runs_dir={tmp_path}").hydra.run.dir).relative_to(tmp_path).as_posix()
    stamp = re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}-(\d+)_dropout_steplr_seed1", name)
    assert stamp is not None and int(stamp[1]) == os.getpid(), name


@pytest.mark.parametrize("continued_from", [None, "another run", "the finished run itself"])
def test_a_dir_holding_a_run_is_never_reused(
    continued_from: str | None, trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    """Not even by a run continuing from a checkpoint (only `resume=true`, or a `ckpt_path` of the unfinished run in
    that dir, continues in it)."""
    finished = tmp_path / "finished"
    shutil.copytree(trained_run, finished)
    before = (finished / "summary.json").read_bytes()
    source = {None: None, "another run": trained_run, "the finished run itself": finished}[continued_from]
    ckpt = [f"ckpt_path={source / 'checkpoints' / 'last.ckpt'}"] if source else []
    error = cli_in_process("src.train", *TINY_RUN, *ckpt, "logger=none", f"hydra.run.dir={finished}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == f"error: {finished} already holds another run's files; give hydra.run.dir a new folder"
    assert (finished / "summary.json").read_bytes() == before
    last = Path("checkpoints") / "last.ckpt"
    assert (finished / last).read_bytes() == (trained_run / last).read_bytes()
