"""The live Excel workbook (src.backprop.workbook): its formulas recompute to the numpy values, for any lr typed in."""

from pathlib import Path

import formulas
import pytest
from openpyxl import load_workbook

from src.backprop.network import COLUMNS, train
from src.backprop.workbook import FIRST_ROW, write_workbook
from tests.helpers import BACKPROP_DEFAULTS


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
    rows = train(0.5, 8, **BACKPROP_DEFAULTS)
    path = tmp_path / "backprop.xlsx"
    write_workbook(path, [{"lr": 0.5, "iterations": 8, **BACKPROP_DEFAULTS}])
    sheet = load_workbook(path)["backprop"]
    assert sheet["B7"].value == 0.5 and sheet["C11"].value.startswith("=C10-$B$7*")
    assert sheet._charts, "the E_total chart is missing"
    assert_sheet_equals_rows(evaluate_workbook(path), "BACKPROP", rows)


def test_changing_the_lr_cell_recomputes_the_whole_sheet(tmp_path: Path) -> None:
    path = tmp_path / "backprop.xlsx"
    write_workbook(path, [{"lr": 0.5, "iterations": 8, **BACKPROP_DEFAULTS}])
    workbook = load_workbook(path)
    workbook["backprop"]["B7"] = 2.0
    workbook.save(path)
    assert_sheet_equals_rows(evaluate_workbook(path), "BACKPROP", train(2.0, 8, **BACKPROP_DEFAULTS))
