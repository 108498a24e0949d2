"""The seed table: one row per recipe over its seeds, from the summary.json files of MNIST training runs.

Final-epoch test accuracy is the result; the best epoch is shown beside it, never instead of it.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from src.core.tables import save_table

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


def write_table(dirs: list[Path], out: Path) -> str:
    summaries = load_summaries(dirs)
    if not summaries:
        folders = ", ".join(map(str, dirs))
        raise FileNotFoundError(f"no summary.json of a tested run under {folders}; finished runs leave one each")
    return save_table(aggregate(summaries), out)


def report_sweep(sweep_dir: Path) -> list[Path]:
    """The task's sweep report (conf/task/mnist.yaml): `results.md/.csv` in the sweep dir, when any job was tested."""
    if not load_summaries([sweep_dir]):
        return []
    write_table([sweep_dir], sweep_dir / "results")
    return [sweep_dir / "results.md", sweep_dir / "results.csv"]
