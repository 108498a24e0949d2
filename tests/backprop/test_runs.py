"""What a backprop run and a sweep of them leave on disk (src.backprop.runs), and the command line's bad input."""

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from openpyxl import load_workbook
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.backprop.network import COLUMNS
from src.backprop.runs import report_sweep, run_task
from tests.helpers import BACKPROP_DEFAULTS, PUBLISHED_LRS, cli_in_process, run_cli


@pytest.mark.slow
def test_cli_sweep_with_m_after_an_override_leaves_every_file(
    tmp_path: Path, tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The published command as typed, `-m` after `task=backprop` (argparse alone would stop reading overrides at
    it); then the comparison rebuilt on demand by `python -m src.backprop.runs SWEEP_DIR` (in this process)."""
    lrs = ",".join(map(str, PUBLISHED_LRS))
    result = run_cli("task=backprop", "-m", f"task.lr={lrs}", f"hydra.sweep.dir={tmp_path}", data_dir=tiny_mnist)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(path for path in tmp_path.iterdir() if path.is_dir() and path.name[0].isdigit())
    assert [job.name for job in jobs] == [f"{n}_backprop_lr{lr}" for n, lr in enumerate(PUBLISHED_LRS)]
    for job, lr in zip(jobs, PUBLISHED_LRS, strict=True):
        with (job / "iterations.csv").open() as handle:
            header, *rows = list(csv.reader(handle))
        assert tuple(header) == COLUMNS and len(rows) == 100 and float(rows[0][1]) == lr
        events = EventAccumulator(str(job / "tensorboard")).Reload()
        assert len(events.Scalars("backprop/E_total")) == 100
        assert load_workbook(job / "backprop.xlsx").sheetnames == ["backprop"]
    for name in ("loss_curves.png", "summary.md", "summary.csv", "backprop_sweep.xlsx"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert load_workbook(tmp_path / "backprop_sweep.xlsx").sheetnames == ["comparison"] + [
        f"lr={lr:g}" for lr in PUBLISHED_LRS
    ]
    summary = (tmp_path / "summary.md").read_text()
    lines = summary.splitlines()
    assert len(lines) == 2 + len(PUBLISHED_LRS)
    assert lines[-1].startswith("| 2 | 100 | 0.0141814 |") and lines[1 + 1].split("|")[-2].strip() == "never"

    (tmp_path / "summary.md").unlink()
    assert cli_in_process("src.backprop.runs", str(tmp_path), data_dir=None, monkeypatch=monkeypatch) is None
    assert (tmp_path / "summary.md").read_text() == summary


@pytest.mark.parametrize("override", ["task.lr=0", "task.lr=abc", "task.iterations=0"])
def test_cli_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, tiny_mnist: Path, override: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    error = cli_in_process("src.train", "task=backprop", override, f"hydra.run.dir={run_dir}", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error is not None and error.startswith("error: task.") and override.split("=")[0] in error, error
    assert not run_dir.exists()


def test_a_sweep_over_more_than_the_learning_rate_tells_its_runs_apart(tmp_path: Path) -> None:
    """Jobs of different lengths and targets at one lr: the table has a row per job with what varies and its length,
    the workbook a sheet per job under a name of its own (not openpyxl's renaming), the chart a series per job."""
    jobs = [(20, [0.5, 0.5]), (100, [0.5, 0.5]), (100, [0.01, 0.99])]
    for index, (iterations, targets) in enumerate(jobs):
        task = OmegaConf.create(
            {"lr": 0.5, "iterations": iterations, **BACKPROP_DEFAULTS, "targets": targets}  # conf's order
        )
        (tmp_path / str(index) / ".hydra").mkdir(parents=True)
        OmegaConf.save({"task": task}, tmp_path / str(index) / ".hydra" / "config.yaml")
        run_task(task, tmp_path / str(index))
    report_sweep(tmp_path)
    header, _, *rows = (tmp_path / "summary.md").read_text().splitlines()
    assert header == (
        "| lr | iterations | targets | E_total@0 | E_total@10 | E_total@50 | E_total@last | first iteration E_total < "
        "0.001 |"
    )
    cells = sorted(tuple(cell.strip() for cell in row.strip("|").split("|"))[:3] for row in rows)
    assert cells == [("0.5", "100", "[0.01, 0.99]"), ("0.5", "100", "[0.5, 0.5]"), ("0.5", "20", "[0.5, 0.5]")]
    workbook = load_workbook(tmp_path / "backprop_sweep.xlsx")
    assert workbook.sheetnames == ["comparison", "run 1", "run 2", "run 3"]
    assert len(workbook["comparison"]._charts[0].series) == 3
