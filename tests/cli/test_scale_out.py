"""Scale-out engines on tiny data: DDP over 2 CPU processes, the joblib and submitit launchers (searches: test_search).

Each engine that starts processes runs once on the command line (marked slow); the refusals run in this process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path

import pytest
from hydra.utils import get_class

from src.aggregate import main as aggregate_main
from tests.helpers import (
    TINY_RUN,
    TINY_TEST,
    cli_in_process,
    comparable,
    compose_train,
    needs_sweep_extras,
    recipe_params,
    run_cli,
    start_cli,
    train_in_process,
)
from tests.mnist.test_run import DETERMINISTIC, wait_for

QUIET = ("logger=none",)


@pytest.mark.slow
def test_ddp_sim_matches_one_process_and_syncs_its_metrics(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two CPU processes on the same global batch (Lightning relaunches the command for rank 1): the same curve as
    one process within noise (BatchNorm sees half batches), one summary written by rank 0, and a test accuracy over
    every test image exactly once."""
    recipe = ("model=record", "callbacks.ema=null", "trainer.max_epochs=3", "trainer.deterministic=true", *QUIET)
    result = run_cli(*TINY_RUN, *recipe, "trainer=ddp_sim", f"hydra.run.dir={tmp_path / 'ddp_sim'}",
                     data_dir=tiny_mnist)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp_sim" / "summary.json").read_text())
    one = train_in_process(*TINY_RUN, *recipe, "trainer=cpu", run_dir=tmp_path / "cpu", data_dir=tiny_mnist)
    assert re.fullmatch(r"2 × .+ \(1 thread, (no )?native bf16\)", ddp["device"]), ddp["device"]
    assert "epoch 3/3 | train loss" in result.stdout + result.stderr
    assert "deprecated" not in result.stdout + result.stderr and "Tip:" not in result.stdout + result.stderr
    for single, two in zip(one["per_epoch"], ddp["per_epoch"], strict=True):  # measured: within 8.3 % and 5.6 %
        assert two["train_loss"] == pytest.approx(single["train_loss"], rel=0.12), (single, two)
        assert two["val_loss"] == pytest.approx(single["val_loss"], rel=0.12), (single, two)
    assert ddp["per_epoch"][-1]["train_loss"] < 0.75 * ddp["per_epoch"][0]["train_loss"], "the two processes learned"
    assert sorted(path.name for path in (tmp_path / "ddp_sim").glob("summary*")) == ["summary.json"]

    error = cli_in_process(
        "src.eval", f"ckpt_path={tmp_path / 'ddp_sim' / 'checkpoints' / 'last.ckpt'}", "data.eval_batch_size=64",
        f"hydra.run.dir={tmp_path / 'eval'}", data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert error is None
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["test_acc"] == ddp["test_acc"]  # synced over ranks, no padded duplicates
    assert round(evaluated["test_acc"] * TINY_TEST / 100, 6).is_integer()


def test_batch_that_does_not_split_over_the_processes_is_one_line(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Said before the processes start (so once): in this process, no DDP process is ever launched."""
    error = cli_in_process(
        "src.train", *TINY_RUN, "data.batch_size=33", "trainer=ddp_sim", *QUIET, f"hydra.run.dir={tmp_path / 'run'}",
        data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert error == "error: data.batch_size=33 does not split evenly over 2 processes; use a multiple of 2"
    assert not (tmp_path / "run").exists()


def test_ddp_inside_a_basic_multirun_fails_each_job_in_one_line(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = cli_in_process("src.train", "-m", *TINY_RUN, "trainer=ddp_sim", *QUIET, f"hydra.sweep.dir={tmp_path}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    failed = (tmp_path / "0_dropout_steplr_seed1" / "FAILED").read_text()
    assert "restarts this command once per process" in failed and "hydra/launcher=slurm" in failed
    assert error is not None and error.startswith("error: 1 of 1 jobs failed: 0_dropout_steplr_seed1 (error: ")
    assert not (tmp_path / "0_dropout_steplr_seed1" / "checkpoints").exists(), "refused before training"


@needs_sweep_extras
def test_joblib_launcher_runs_jobs_in_parallel_and_the_sweep_is_aggregated(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """In the default sweep dir, `outputs/multiruns/<time>-<pid>`: one dir for the command, whichever worker process
    runs a job (the command in this process, its jobs in joblib's worker processes, whose output is this one's)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    error = cli_in_process(
        "src.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=baseline", "seed=1,2", *TINY_RUN,
        "trainer.max_epochs=1", *QUIET, data_dir=tiny_mnist, monkeypatch=monkeypatch, cwd=tmp_path,
    )  # fmt: skip
    assert error is None
    (sweep_dir,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert sorted(path.name for path in sweep_dir.glob("*_baseline_seed*")) == ["0_baseline_seed1", "1_baseline_seed2"]
    assert "deprecated" not in "".join(capfd.readouterr())  # the worker processes filter library noise too
    assert "JoblibLauncher" in (sweep_dir / "multirun.yaml").read_text()
    summaries = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/summary.json"))]
    assert [summary["seed"] for summary in summaries] == [1, 2]
    assert f"| baseline | {recipe_params('baseline'):,} | 1 | 1,2 |" in (sweep_dir / "results.md").read_text()
    aggregate_main([str(sweep_dir), "--out", str(sweep_dir / "again")])
    assert (sweep_dir / "again.md").read_text() == (sweep_dir / "results.md").read_text()


@needs_sweep_extras
def test_slurm_launcher_config_composes_from_its_yaml() -> None:
    """What conf/hydra/launcher/slurm.yaml sets (nothing passed on the command line) over the submitit plugin's own
    SLURM defaults, and the launcher class it names."""
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    cfg = compose_train("hydra/launcher=slurm", "trainer=ddp")
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_) is SlurmLauncher and SlurmLauncher._EXECUTOR == "slurm"
    from_yaml = {"timeout_min": 60, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1, "cpus_per_task": 8,
                 "mem_gb": 32, "partition": None}  # fmt: skip
    assert {key: launcher[key] for key in from_yaml} == from_yaml
    assert (launcher.signal_delay_s, launcher.max_num_timeout) == (120, 0)  # the plugin's defaults, kept
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    instance = SlurmLauncher(**{key: value for key, value in launcher.items() if key != "_target_"})
    assert {key: instance.params[key] for key in from_yaml} == from_yaml
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm is True


def submitit_task(folder: Path) -> int | None:
    """The pid of the process running a submitit job whose submission folder is under `folder`, if one runs."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"submitit.core._submit" in args and any(str(folder).encode() in arg for arg in args):
                return int(cmdline.parent.name)
    return None


@pytest.mark.slow
@needs_sweep_extras
def test_submitit_launcher_requeues_a_job_on_the_time_limits_signal(tiny_mnist: Path, tmp_path: Path) -> None:
    """The submitit plugin that `hydra/launcher=slurm` uses, with its local executor (no cluster here): SIGUSR2, which
    submitit has SLURM send before the time limit (and on preemption), in epoch 2 stops the job cleanly, submitit
    checkpoints and requeues it, and the requeued job continues its dir to the uninterrupted result."""
    sweep = tmp_path / "sweep"
    job = start_cli("-m", "hydra/launcher=submitit_local", *DETERMINISTIC, f"hydra.sweep.dir={sweep}",
                    data_dir=tiny_mnist, stderr=tmp_path / "sweep.err")  # fmt: skip
    expected = train_in_process(*DETERMINISTIC, run_dir=tmp_path / "reference", data_dir=tiny_mnist)
    last = sweep / "0_dropout_steplr_seed3" / "checkpoints" / "last.ckpt"
    wait_for(lambda: last.is_file() and submitit_task(sweep) is not None, job)
    os.kill(submitit_task(sweep), signal.SIGUSR2)
    assert job.wait(timeout=600) == 0, (tmp_path / "sweep.err").read_text()[-3000:]
    summary = json.loads((last.parent.parent / "summary.json").read_text())
    assert summary["resumed_from"] == str(last), "the requeued job continued the job's dir"
    assert comparable(summary) == comparable(expected)
    logs = "".join(path.read_text() for path in (sweep / ".submitit").rglob("*.out"))
    assert "interrupted by SIGUSR2 in epoch 2" in logs and "Requeued job" in logs
    assert (sweep / "results.md").is_file()
