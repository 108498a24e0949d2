"""What a multirun leaves when it ends: the task's comparison (named by the task's config), the best trial of a
search, and the jobs that failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.core.rundirs import FAILED_MARK


def hydra_dirs(sweep_dir: Path) -> dict[Path, int]:
    """Each job's `.hydra` dir under `sweep_dir` with its modification time (ns)."""
    return {path: path.stat().st_mtime_ns for path in sweep_dir.rglob(".hydra") if path.is_dir()}


def jobs_run(sweep_dir: Path, before: dict[Path, int]) -> list[Path]:
    """The job dirs this multirun wrote into: `.hydra` dirs that are new, or changed since `before` (a reused dir
    gets a `.hydra/<time>/`). A search's sweep dir also keeps the trials of the sessions that ran the study before,
    whose failures are not this run's. Compared with the dirs' own times, not this machine's clock."""
    return sorted(path.parent for path, mtime in hydra_dirs(sweep_dir).items() if before.get(path) != mtime)


def failed_jobs(sweep_dir: Path, jobs: list[Path]) -> dict[str, str]:
    """Job dir name → its one-line error, for the `jobs` that failed."""
    marks = [job / FAILED_MARK for job in jobs if (job / FAILED_MARK).is_file()]
    return {str(mark.parent.relative_to(sweep_dir)): mark.read_text().strip() for mark in marks}


class SweepReport(Callback):
    """At the end of a multirun, writes the sweep's comparison into its dir through `task.sweep_report` (MNIST: the
    seed table; backprop: loss curves, summary and workbook). Failed jobs are left out of the comparison and listed
    last, and the sweep exits non-zero."""

    def __init__(self) -> None:
        self.hydra_dirs_before: dict[Path, int] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.hydra_dirs_before = hydra_dirs(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = len(ran := jobs_run(sweep_dir, self.hydra_dirs_before))
        failed = failed_jobs(sweep_dir, ran)
        written = instantiate(config.task.sweep_report)(sweep_dir) if len(failed) < jobs else []
        if written:
            print("sweep report:", *written, sep="\n  ")
        search = sweep_dir / "optimization_results.yaml"  # written by the Optuna sweeper
        if search.is_file():
            result = OmegaConf.load(search)
            overrides = " ".join(f"{name}={value}" for name, value in result.best_params.items())
            print(f"best trial of the study: {config.optimized_metric} {result.best_value:.2f} with\n  {overrides}")
        if failed:
            listed = ", ".join(f"{name} ({message})" for name, message in failed.items())
            raise SystemExit(f"error: {len(failed)} of {jobs} jobs failed: {listed}")
