"""Result tables as Markdown (for the README and a reader) and CSV (for a spreadsheet), written side by side."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
