"""Aggregates runs: `python -m src.aggregate DIR...` reads every summary.json below the DIRs (any sweep or run dir)
and writes one row per recipe, over its seeds, as Markdown and CSV.

Final-epoch test accuracy is the result; the best epoch is shown beside it, never instead of it.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.config import FAILED_MARK

COLUMNS = (
    "recipe", "params", "epochs", "seeds", "final test acc % (mean ± std)", "min", "max", "last-3-epochs min",
    "best-epoch acc % (mean)", "first epoch ≥ 99.4 % (per seed)", "minutes to 99.4 % from start (per seed)",
    "minutes per run", "device",
)  # fmt: skip


def load_summaries(dirs: list[Path]) -> list[dict[str, Any]]:
    """The tested runs below `dirs`; a search's trials (test=false) have no test figures to aggregate."""
    paths = sorted(path for folder in dirs for path in folder.rglob("summary.json"))
    summaries = [json.loads(path.read_text()) for path in paths]
    return [summary for summary in summaries if summary.get("test_acc") is not None]


def last_epochs_min(runs: list[dict[str, Any]], count: int = 3) -> str:
    """The lowest per-epoch evaluation accuracy over each run's last `count` epochs (the test set unless the runs
    held a validation split out): how stable the final result is, not only where it landed."""
    values = [row["val_acc"] for run in runs for row in run["per_epoch"][-count:] if row.get("val_acc") is not None]
    return f"{min(values):.2f}" if values else "n/a"


def aggregate(summaries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per recipe; std is the sample std over seeds (0 with a single run)."""
    by_recipe: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for summary in summaries:
        by_recipe[summary["recipe"]].append(summary)
    rows = []
    for recipe, runs in sorted(by_recipe.items()):
        runs.sort(key=lambda run: run["seed"])
        accs = [run["test_acc"] for run in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        first = ", ".join(str(run["first_epoch_at_or_above_99_4"] or "never") for run in runs)
        minutes_to_target = ", ".join(
            f"{run['seconds_to_99_4'] / 60:.1f}" if run.get("seconds_to_99_4") else "never" for run in runs
        )
        values = (
            recipe,
            "/".join(sorted({f"{run['params']:,}" for run in runs})),
            "/".join(sorted({str(run["epochs"]) for run in runs})),
            ",".join(str(run["seed"]) for run in runs),
            f"{statistics.mean(accs):.2f} ± {std:.2f}",
            f"{min(accs):.2f}",
            f"{max(accs):.2f}",
            last_epochs_min(runs),
            f"{statistics.mean(run['best_val_acc'] for run in runs):.2f}",
            first,
            minutes_to_target,
            f"{statistics.mean(run['train_seconds'] for run in runs) / 60:.1f}",
            "/".join(sorted({run.get("device", "unknown") for run in runs})),
        )
        rows.append(dict(zip(COLUMNS, values, strict=True)))
    return rows


def save_table(rows: list[dict[str, Any]], stem: Path, cell: Callable[[Any], str] = str) -> str:
    """Writes `rows` as STEM.md (each cell through `cell`) and STEM.csv (raw values); returns the Markdown."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[column]) for column in columns) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(markdown)
    with stem.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return markdown


def write_table(dirs: list[Path], out: Path) -> str:
    summaries = load_summaries(dirs)
    if not summaries:
        folders = ", ".join(map(str, dirs))
        raise FileNotFoundError(f"no summary.json of a tested run under {folders}; finished runs leave one each")
    return save_table(aggregate(summaries), out)


def failed_jobs(sweep_dir: Path) -> dict[str, str]:
    """Job dir name → its one-line error, for the jobs of a sweep that failed."""
    marks = sorted(sweep_dir.rglob(FAILED_MARK))  # job dirs, or a search's session/job dirs
    return {str(mark.parent.relative_to(sweep_dir)): mark.read_text().strip() for mark in marks}


class SweepReport(Callback):
    """At the end of a multirun, writes the sweep's comparison into its dir: `results.md/.csv` for MNIST
    (mean ± std per recipe over seeds), the loss curves, summary and workbook for backprop. Failed jobs are
    left out of the comparison and listed last, and the sweep exits non-zero."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = failed_jobs(sweep_dir)
        jobs = sum(1 for path in sweep_dir.rglob(".hydra") if path.is_dir())
        written: list[Path] = []
        if config.task.name == "backprop" and len(failed) < jobs:
            from src.backprop_runs import report_sweep  # matplotlib and openpyxl only when needed

            written = report_sweep(sweep_dir)
        elif load_summaries([sweep_dir]):
            write_table([sweep_dir], sweep_dir / "results")
            written = [sweep_dir / "results.md", sweep_dir / "results.csv"]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep dirs holding summary.json files")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.csv (default: results.md/.csv in the first DIR)")
    args = parser.parse_args(argv)
    missing = [str(folder) for folder in args.dirs if not folder.is_dir()]
    if missing:
        sys.exit(f"error: not a directory: {', '.join(missing)}")
    try:
        print(write_table(args.dirs, args.out or args.dirs[0] / "results"), end="")
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
