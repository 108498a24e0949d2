"""What a backprop run and a backprop sweep leave on disk: the CSV, TensorBoard, the workbook, the comparison.

`python -m src.backprop.runs SWEEP_DIR` (re)builds the comparison for an existing sweep; Hydra's multirun builds
it automatically when the sweep ends (`src.core.sweep.SweepReport` calls `report_sweep`, as conf/task/backprop.yaml
names it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from src.backprop.network import WEIGHTS, read_csv, train, write_csv  # noqa: E402
from src.backprop.workbook import write_workbook  # noqa: E402
from src.core.errors import UserError  # noqa: E402
from src.core.files import write_json_atomically  # noqa: E402
from src.core.provenance import provenance  # noqa: E402
from src.core.tables import save_table  # noqa: E402

log = logging.getLogger(__name__)

CONVERGED = 1e-3
NUMPY_PRECISION = "64-true (numpy float64)"
REPORT_ITERATIONS = (0, 10, 50)


def run_task(task: DictConfig, output_dir: Path) -> dict[str, float]:
    """Trains first (validating every value), then writes, so bad input leaves nothing behind."""
    rows = train(task.lr, task.iterations, task.inputs, task.targets, task.weights)
    write_csv(rows, output_dir / "iterations.csv")
    with SummaryWriter(str(output_dir / "tensorboard")) as writer:
        for row in rows:
            writer.add_scalar("backprop/E_total", row["E_total"], int(row["iteration"]))
    write_workbook(output_dir / "backprop.xlsx", [workbook_run(rows, task.inputs, task.targets)])
    final = {key: rows[-1][key] for key in ("iteration", "lr", "E_total")}
    summary = {"task": "backprop", **final, "iterations": len(rows), **provenance(NUMPY_PRECISION, torch.device("cpu"))}
    write_json_atomically(output_dir / "summary.json", summary)
    return rows[-1]


def run(cfg: DictConfig, output_dir: Path) -> float:
    """The task's runner (conf/task/backprop.yaml): one learning rate; returns the final E_total for sweepers."""
    last = run_task(cfg.task, output_dir)
    log.info("E_total %.6g after %d iterations at lr %g; outputs in %s",
             last["E_total"], last["iteration"] + 1, last["lr"], output_dir)  # fmt: skip
    return last["E_total"]


def workbook_run(rows: list[dict[str, float]], inputs: Any, targets: Any) -> dict[str, Any]:
    return {
        "lr": rows[0]["lr"],
        "iterations": len(rows),
        "inputs": list(inputs),
        "targets": list(targets),
        "weights": [rows[0][w] for w in WEIGHTS],
    }


def varying_settings(tasks: list[dict[str, Any]]) -> list[str]:
    """The task settings that tell a sweep's jobs apart: `lr` first, then whichever others differ between them (the
    runner and the sweep report, which every job shares, are not settings)."""
    settings = [key for key in tasks[0] if key not in ("lr", "runner", "sweep_report")]
    return ["lr", *(key for key in settings if len({str(task.get(key)) for task in tasks}) > 1)]


def run_label(task: dict[str, Any], varying: list[str]) -> str:
    """`lr=0.5`, or `lr=0.5, targets=[0.01, 0.99]` where a sweep varies more than the learning rate."""
    return ", ".join(f"{key}={task[key]:g}" if key == "lr" else f"{key}={task[key]}" for key in varying)


def summary_row(rows: list[dict[str, float]], task: dict[str, Any], varying: list[str]) -> dict[str, Any]:
    losses = [row["E_total"] for row in rows]
    first = next((index for index, loss in enumerate(losses) if loss < CONVERGED), None)
    at = {f"E_total@{k}": losses[k] if k < len(losses) else None for k in REPORT_ITERATIONS}
    return {
        **{key: task[key] for key in varying},
        "iterations": len(losses),
        **at,
        "E_total@last": losses[-1],
        f"first iteration E_total < {CONVERGED:g}": "never" if first is None else first,
    }


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else ("—" if value is None else str(value))


def report_sweep(sweep_dir: Path) -> list[Path]:
    """Side-by-side results of every backprop job under `sweep_dir`, ordered by learning rate."""
    jobs = sorted(path.parent for path in sweep_dir.glob("*/iterations.csv"))
    if not jobs:
        raise UserError(f"no backprop runs (*/iterations.csv) under {sweep_dir}")
    runs = []
    for job in jobs:
        task = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml").task, resolve=True)
        runs.append((read_csv(job / "iterations.csv"), task))
    runs.sort(key=lambda run: run[0][0]["lr"])
    varying = varying_settings([task for _, task in runs])
    labels = [run_label(task, varying) for _, task in runs]

    figure, axes = plt.subplots(figsize=(8, 5))
    for (rows, _), label in zip(runs, labels, strict=True):
        axes.plot([r["iteration"] for r in rows], [r["E_total"] for r in rows], label=label)
    axes.set(xlabel="iteration", ylabel="E_total", title=f"Backprop by hand: E_total by {', '.join(varying)}")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(sweep_dir / "loss_curves.png", dpi=120)
    plt.close(figure)

    save_table([summary_row(rows, task, varying) for rows, task in runs], sweep_dir / "summary", cell=_format)

    workbook_runs = [workbook_run(rows, task["inputs"], task["targets"]) for rows, task in runs]
    write_workbook(sweep_dir / "backprop_sweep.xlsx", workbook_runs, labels)
    return [sweep_dir / name for name in ("loss_curves.png", "summary.md", "summary.csv", "backprop_sweep.xlsx")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the comparison of a backprop sweep dir.")
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        written = report_sweep(args.sweep_dir)
    except UserError as error:
        sys.exit(f"error: {error}")
    print("\n".join(map(str, written)))


if __name__ == "__main__":
    main()
