"""The seed table: one row per recipe, precision and machine over its seeds, from the summary.json files of MNIST
training runs.

Final-epoch test accuracy is the result; the best epoch is shown beside it, never instead of it. Runs of one recipe
on different machines or precisions are never averaged together: they get a row each, and the table says so.
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
    "minutes per run", "precision", "device",
)  # fmt: skip
TRAINING_KEYS = {"recipe", "seed", "params", "test_acc", "per_epoch"}


def is_tested_training_run(summary: Any) -> bool:
    """An MNIST training run's summary with test figures: not a backprop run's, not a search trial (test=false)."""
    return isinstance(summary, dict) and summary.keys() >= TRAINING_KEYS and summary["test_acc"] is not None


def load_summaries(dirs: list[Path]) -> list[dict[str, Any]]:
    """The tested MNIST training runs below `dirs` (evals write eval.json, and are not among them)."""
    paths = sorted(path for folder in dirs for path in folder.rglob("summary.json"))
    summaries = [json.loads(path.read_text()) for path in paths]
    return [summary for summary in summaries if is_tested_training_run(summary)]


def machine(run: dict[str, Any]) -> tuple[str, str]:
    """(precision, device) of a run; summaries written before provenance was recorded say `unknown`."""
    return run.get("precision", "unknown"), run.get("device", "unknown")


def last_epochs_min(runs: list[dict[str, Any]], count: int = 3) -> str:
    """The lowest per-epoch evaluation accuracy over each run's last `count` epochs (the test set unless the runs
    held a validation split out): how stable the final result is, not only where it landed."""
    values = [row["val_acc"] for run in runs for row in run["per_epoch"][-count:] if row.get("val_acc") is not None]
    return f"{min(values):.2f}" if values else "n/a"


def best_epoch_mean(runs: list[dict[str, Any]]) -> str:
    """The mean best-epoch accuracy of the runs that evaluated during training (`speedrun` does not: n/a)."""
    values = [run["best_val_acc"] for run in runs if run.get("best_val_acc") is not None]
    return f"{statistics.mean(values):.2f}" if values else "n/a"


def aggregate(summaries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per recipe, precision and device; std is the sample std over seeds (0 with a single run)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for summary in summaries:
        groups[(summary["recipe"], *machine(summary))].append(summary)
    rows = []
    for (recipe, precision, device), runs in sorted(groups.items()):
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
            best_epoch_mean(runs),
            first,
            minutes_to_target,
            f"{statistics.mean(run['train_seconds'] for run in runs) / 60:.1f}",
            precision,
            device,
        )
        rows.append(dict(zip(COLUMNS, values, strict=True)))
    return rows


def mixed_machines(summaries: list[dict[str, Any]]) -> list[str]:
    """A line per recipe whose runs come from more than one precision or device: its rows are not one result."""
    machines: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for summary in summaries:
        machines[summary["recipe"]].add(machine(summary))
    return [
        f"Note: `{recipe}` has runs from {len(found)} precision/device combinations; each has its own row, and no "
        "mean is taken across them (the same seed gives different digits on different hardware)."
        for recipe, found in sorted(machines.items())
        if len(found) > 1
    ]


def write_table(dirs: list[Path], out: Path) -> str:
    summaries = load_summaries(dirs)
    if not summaries:
        folders = ", ".join(map(str, dirs))
        raise FileNotFoundError(f"no summary.json of a tested run under {folders}; finished runs leave one each")
    markdown = save_table(aggregate(summaries), out)
    notes = mixed_machines(summaries)
    if notes:
        markdown += "\n" + "\n".join(notes) + "\n"
        out.with_suffix(".md").write_text(markdown)
    return markdown


def report_sweep(sweep_dir: Path) -> list[Path]:
    """The task's sweep report (conf/task/mnist.yaml): `results.md/.csv` in the sweep dir, when any job was tested."""
    if not load_summaries([sweep_dir]):
        return []
    write_table([sweep_dir], sweep_dir / "results")
    return [sweep_dir / "results.md", sweep_dir / "results.csv"]
