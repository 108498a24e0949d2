"""Backprop by hand: the hand-written gradients against autograd, the update rule, the learning-rate ordering,
the workbook's live formulas against the CSV, and the bad-input errors."""

import csv
import warnings
from pathlib import Path

import formulas
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from openpyxl import load_workbook
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.backprop.network import COLUMNS, GRADIENTS, WEIGHTS, forward_backward, read_csv, sigmoid, train, write_csv
from src.backprop.runs import report_sweep, run_task
from src.backprop.workbook import FIRST_ROW, write_workbook
from src.core.errors import UserError
from tests.conftest import cli_in_process, run_cli

DEFAULTS = {
    "inputs": [0.05, 0.1],
    "targets": [0.5, 0.5],
    "weights": [0.15, 0.2, 0.25, 0.3, 0.4, 0.45, 0.5, 0.55],
}
PUBLISHED_LRS = (0.1, 0.2, 0.5, 0.8, 1.0, 2.0)


def autograd_gradients(weights: list[float], inputs: list[float], targets: list[float]) -> np.ndarray:
    w = torch.tensor(weights, dtype=torch.float64, requires_grad=True)
    i = torch.tensor(inputs, dtype=torch.float64)
    t = torch.tensor(targets, dtype=torch.float64)
    hidden = torch.sigmoid(torch.stack([w[0] * i[0] + w[1] * i[1], w[2] * i[0] + w[3] * i[1]]))
    output = torch.sigmoid(torch.stack([w[4] * hidden[0] + w[5] * hidden[1], w[6] * hidden[0] + w[7] * hidden[1]]))
    (0.5 * (t - output) ** 2).sum().backward()
    return w.grad.numpy()


POINTS = [
    (DEFAULTS["weights"], DEFAULTS["inputs"], DEFAULTS["targets"]),
    ([-1.3, 2.1, 0.7, -0.4, 1.9, -2.5, 0.3, 1.1], [0.9, -0.6], [0.1, 0.95]),
    ([3.0, -3.0, 2.0, 1.5, -4.0, 2.5, -1.0, 3.5], [1.5, 2.0], [0.8, 0.2]),
    (list(np.random.default_rng(7).normal(size=8)), [0.3, 0.7], [0.0, 1.0]),
]


@pytest.mark.parametrize(("weights", "inputs", "targets"), POINTS)
def test_hand_written_gradients_equal_autograd(weights: list[float], inputs: list[float], targets: list[float]) -> None:
    row = forward_backward(weights, inputs, targets)
    np.testing.assert_allclose([row[g] for g in GRADIENTS], autograd_gradients(weights, inputs, targets), rtol=1e-10)


def test_default_network_matches_the_spreadsheet_start() -> None:
    row = forward_backward(DEFAULTS["weights"], DEFAULTS["inputs"], DEFAULTS["targets"])
    assert row["h1"] == pytest.approx(0.0275) and row["h2"] == pytest.approx(0.0425)
    assert row["E_total"] == pytest.approx(0.014181377937891659, rel=1e-12)


def test_one_iteration_moves_every_weight_by_minus_lr_times_its_gradient() -> None:
    first, second = train(0.8, 2, **DEFAULTS)
    for w in WEIGHTS:
        assert second[w] == first[w] - 0.8 * first[f"dE_d{w}"]
        assert second[w] != first[w]


def test_higher_published_learning_rates_converge_faster() -> None:
    final = [train(lr, 100, **DEFAULTS)[-1]["E_total"] for lr in PUBLISHED_LRS]
    assert final == sorted(final, reverse=True) and len(set(final)) == len(final)


def test_huge_learning_rate_stays_finite_and_quiet() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = train(1e4, 100, **DEFAULTS)
        assert sigmoid(-1e6) == 0.0 and sigmoid(1e6) == 1.0
    assert all(np.isfinite(row[c]) for row in rows for c in COLUMNS)


def test_overflow_gives_one_clear_error_and_no_warnings() -> None:
    with (
        warnings.catch_warnings(),
        pytest.raises(UserError, match=r"h1 became non-finite at iteration 0 with task.lr=1e\+308"),
    ):
        warnings.simplefilter("error")
        train(1e308, 100, inputs=[1e308, 1e308], targets=DEFAULTS["targets"], weights=[5.0] * 8)


@pytest.mark.parametrize(
    ("lr", "iterations", "message"),
    [(0, 100, "task.lr=0.0 must be > 0"), (-0.5, 100, "must be > 0"), ("abc", 100, "task.lr='abc' is not a number"),
     (0.5, 0, "task.iterations=0 must be a whole number >= 1"), (0.5, "ten", "task.iterations='ten'")],
)  # fmt: skip
def test_bad_values_are_refused(lr: object, iterations: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        train(lr, iterations, **DEFAULTS)


def test_csv_keeps_full_precision(tmp_path: Path) -> None:
    rows = train(0.5, 5, **DEFAULTS)
    write_csv(rows, tmp_path / "iterations.csv")
    assert read_csv(tmp_path / "iterations.csv") == rows


def evaluate_workbook(path: Path) -> dict[str, float]:
    """Recomputes every formula with the `formulas` engine; returns 'SHEET!CELL' → value."""
    solution = formulas.ExcelModel().loads(str(path)).finish().calculate()
    prefix = f"'[{path.name}]".upper()
    return {key.upper().replace(prefix, "").replace("'", ""): cell.value[0, 0] for key, cell in solution.items()}


def assert_sheet_equals_rows(values: dict[str, float], sheet: str, rows: list[dict[str, float]]) -> None:
    for index, row in enumerate(rows):
        for column_index, column in enumerate(COLUMNS):
            letter = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[column_index % 26]
            letter = ("A" + letter) if column_index >= 26 else letter
            computed = float(values[f"{sheet}!{letter}{FIRST_ROW + index}"])
            assert computed == pytest.approx(row[column], rel=1e-9, abs=1e-15), (index, column)


def test_workbook_formulas_recompute_to_the_numpy_values(tmp_path: Path) -> None:
    rows = train(0.5, 8, **DEFAULTS)
    path = tmp_path / "backprop.xlsx"
    write_workbook(path, [{"lr": 0.5, "iterations": 8, **DEFAULTS}])
    sheet = load_workbook(path)["backprop"]
    assert sheet["B7"].value == 0.5 and sheet["C11"].value.startswith("=C10-$B$7*")
    assert sheet._charts, "the E_total chart is missing"
    assert_sheet_equals_rows(evaluate_workbook(path), "BACKPROP", rows)


def test_changing_the_lr_cell_recomputes_the_whole_sheet(tmp_path: Path) -> None:
    path = tmp_path / "backprop.xlsx"
    write_workbook(path, [{"lr": 0.5, "iterations": 8, **DEFAULTS}])
    workbook = load_workbook(path)
    workbook["backprop"]["B7"] = 2.0
    workbook.save(path)
    assert_sheet_equals_rows(evaluate_workbook(path), "BACKPROP", train(2.0, 8, **DEFAULTS))


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
        task = OmegaConf.create({"lr": 0.5, "iterations": iterations, **DEFAULTS, "targets": targets})  # conf's order
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
