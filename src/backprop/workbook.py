"""The backprop exercise as a live Excel workbook: parameters in cells, every later cell a formula, a loss chart.

Change the learning-rate cell (B7) and the whole sheet recomputes, as in the published spreadsheet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from openpyxl import Workbook
from openpyxl.chart import LineChart, Reference, Series
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from src.backprop.network import COLUMNS, WEIGHTS

PARAMETER_CELLS = {"i1": "$B$3", "i2": "$B$4", "t1": "$B$5", "t2": "$B$6", "lr": "$B$7"}
HEADER_ROW = 9
FIRST_ROW = HEADER_ROW + 1


def _col(name: str) -> str:
    return get_column_letter(COLUMNS.index(name) + 1)


def _sigmoid(cell: str) -> str:
    """The same overflow-free form as `src.backprop.network.sigmoid`, so both give identical numbers."""
    return f"IF({cell}>=0,1/(1+EXP(-{cell})),EXP({cell})/(1+EXP({cell})))"


def _row_formulas(r: int) -> dict[str, str]:
    """Row r's forward pass and gradients, written out by the chain rule from row r's weights."""
    c = {name: f"{_col(name)}{r}" for name in COLUMNS}
    i1, i2, t1, t2 = (PARAMETER_CELLS[name] for name in ("i1", "i2", "t1", "t2"))
    delta_o1 = f"({c['a_o1']}-{t1})*{c['a_o1']}*(1-{c['a_o1']})"
    delta_o2 = f"({c['a_o2']}-{t2})*{c['a_o2']}*(1-{c['a_o2']})"
    delta_h1 = f"({delta_o1}*{c['w5']}+{delta_o2}*{c['w7']})*{c['a_h1']}*(1-{c['a_h1']})"
    delta_h2 = f"({delta_o1}*{c['w6']}+{delta_o2}*{c['w8']})*{c['a_h2']}*(1-{c['a_h2']})"
    return {
        "lr": f"={PARAMETER_CELLS['lr']}",
        "h1": f"={c['w1']}*{i1}+{c['w2']}*{i2}",
        "a_h1": f"={_sigmoid(c['h1'])}",
        "h2": f"={c['w3']}*{i1}+{c['w4']}*{i2}",
        "a_h2": f"={_sigmoid(c['h2'])}",
        "o1": f"={c['w5']}*{c['a_h1']}+{c['w6']}*{c['a_h2']}",
        "a_o1": f"={_sigmoid(c['o1'])}",
        "o2": f"={c['w7']}*{c['a_h1']}+{c['w8']}*{c['a_h2']}",
        "a_o2": f"={_sigmoid(c['o2'])}",
        "E1": f"=0.5*({t1}-{c['a_o1']})^2",
        "E2": f"=0.5*({t2}-{c['a_o2']})^2",
        "E_total": f"={c['E1']}+{c['E2']}",
        "dE_dw1": f"={delta_h1}*{i1}",
        "dE_dw2": f"={delta_h1}*{i2}",
        "dE_dw3": f"={delta_h2}*{i1}",
        "dE_dw4": f"={delta_h2}*{i2}",
        "dE_dw5": f"={delta_o1}*{c['a_h1']}",
        "dE_dw6": f"={delta_o1}*{c['a_h2']}",
        "dE_dw7": f"={delta_o2}*{c['a_h1']}",
        "dE_dw8": f"={delta_o2}*{c['a_h2']}",
    }


def fill_sheet(
    sheet: Worksheet,
    lr: float,
    iterations: int,
    inputs: Sequence[float],
    targets: Sequence[float],
    weights: Sequence[float],
) -> Reference:
    """Writes one run's sheet and its E_total chart; returns the E_total cells for comparison charts."""
    sheet["A1"] = "Backprop by hand: 2-2-2 sigmoid network, E_total = ½(t1−a_o1)² + ½(t2−a_o2)²"
    for row, (name, value) in enumerate(zip(PARAMETER_CELLS, (*inputs, *targets, lr), strict=True), start=3):
        sheet.cell(row=row, column=1, value=name)
        sheet.cell(row=row, column=2, value=float(value))
    for column, name in enumerate(COLUMNS, start=1):
        sheet.cell(row=HEADER_ROW, column=column, value=name)
    for iteration in range(iterations):
        r = FIRST_ROW + iteration
        cells = _row_formulas(r)
        if iteration == 0:
            cells |= {"iteration": 0, **{w: float(v) for w, v in zip(WEIGHTS, weights, strict=True)}}
        else:
            cells["iteration"] = f"={_col('iteration')}{r - 1}+1"
            for w in WEIGHTS:
                cells[w] = f"={_col(w)}{r - 1}-{PARAMETER_CELLS['lr']}*{_col('dE_d' + w)}{r - 1}"
        for name, value in cells.items():
            sheet[f"{_col(name)}{r}"] = value
    last_row = FIRST_ROW + iterations - 1
    e_total = COLUMNS.index("E_total") + 1
    losses = Reference(sheet, min_col=e_total, min_row=FIRST_ROW, max_row=last_row)
    chart = _chart(f"E_total, lr = {lr:g}", sheet, last_row)
    chart.series.append(Series(losses, title="E_total"))
    sheet.add_chart(chart, f"{get_column_letter(len(COLUMNS) + 2)}2")
    return losses


def _chart(title: str, sheet: Worksheet, last_row: int) -> LineChart:
    chart = LineChart()
    chart.title, chart.x_axis.title, chart.y_axis.title = title, "iteration", "E_total"
    chart.width, chart.height = 18, 10
    chart.set_categories(Reference(sheet, min_col=1, min_row=FIRST_ROW, max_row=last_row))
    return chart


def sheet_names(labels: Sequence[str]) -> list[str]:
    """The runs' labels as Excel sheet names where each fits (no `[]:*?/\\`, at most 31 characters) and none repeats;
    otherwise `run 1`, `run 2`, ... in the chart's order (openpyxl would rename a repeated name itself: `lr=0.51` for
    a second `lr=0.5`)."""
    names = [re.sub(r"[\[\]:*?/\\]", "", label) for label in labels]
    if len(set(names)) < len(names) or max(map(len, names)) > 31:
        return [f"run {index}" for index in range(1, len(labels) + 1)]
    return names


def write_workbook(path: Path, runs: Sequence[dict], labels: Sequence[str] | None = None) -> None:
    """One sheet per run (keys: lr, iterations, inputs, targets, weights); with several, a comparison sheet first.
    `labels` tell the runs apart in sheet names and the chart's legend (by default, their learning rates)."""
    labels = labels or [f"lr={run['lr']:g}" for run in runs]
    workbook = Workbook()
    comparison = workbook.active
    sheets = []
    for run, name in zip(runs, sheet_names(labels), strict=True):
        sheet = workbook.create_sheet(name if len(runs) > 1 else "backprop")
        sheets.append((run, sheet, fill_sheet(sheet, **run)))
    if len(runs) == 1:
        workbook.remove(comparison)
    else:
        comparison.title = "comparison"
        comparison["A1"] = "E_total per iteration for each run (each sheet recomputes from its lr cell, B7)"
        longest = max(sheets, key=lambda item: item[0]["iterations"])
        chart = _chart("E_total vs iteration", longest[1], FIRST_ROW + longest[0]["iterations"] - 1)
        for (_, _, losses), label in zip(sheets, labels, strict=True):
            chart.series.append(Series(losses, title=label))
        comparison.add_chart(chart, "A3")
    workbook.save(path)
