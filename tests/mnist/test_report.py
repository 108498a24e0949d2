"""The seed table (src.mnist.report): a table never averages two machines or precisions into one mean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.mnist.report import write_table


def runs_on_two_machines(trained_run: Path, root: Path) -> None:
    """The shared run's summary as three seeds from one machine in fp32 and two from another in bf16, with evals
    (today's eval.json, and the summary.json an eval wrote before) and a backprop run beside them."""
    summary = json.loads((trained_run / "summary.json").read_text())
    for seed, precision, device in [(1, "32-true", "CPU A"), (2, "32-true", "CPU A"), (3, "32-true", "CPU A"),
                                    (1, "bf16-mixed", "CPU B"), (2, "bf16-mixed", "CPU B")]:  # fmt: skip
        run = root / f"{device}_{precision}_{seed}"
        run.mkdir(parents=True)
        acc = 99.0 + seed / 10 + (0.5 if device == "CPU B" else 0.0)
        record = {**summary, "seed": seed, "precision": precision, "device": device, "test_acc": acc}
        (run / "summary.json").write_text(json.dumps(record))
    evals = root / "evals" / "one"
    evals.mkdir(parents=True)
    earlier_eval = {"ckpt_path": "x", "recipe": "record", "seed": 1, "params": 7666, "epoch": 2, "test_acc": 12.0}
    (evals / "eval.json").write_text(json.dumps(earlier_eval))
    (evals / "summary.json").write_text(json.dumps(earlier_eval))
    backprop = root / "backprop"
    backprop.mkdir()
    (backprop / "summary.json").write_text(json.dumps({"task": "backprop", "E_total": 0.01, "lr": 0.5}))


def test_table_of_two_machines_keeps_them_apart_and_says_so(trained_run: Path, tmp_path: Path) -> None:
    runs_on_two_machines(trained_run, tmp_path / "outputs")
    markdown = write_table([tmp_path / "outputs"], tmp_path / "table")
    rows = [line for line in markdown.splitlines() if line.startswith("| record")]
    assert len(rows) == 2
    fp32 = next(row for row in rows if "32-true" in row)
    bf16 = next(row for row in rows if "bf16-mixed" in row)
    assert "| 1,2,3 |" in fp32 and "99.20 ± 0.10" in fp32 and "CPU A" in fp32
    assert "| 1,2 |" in bf16 and "99.65 ± 0.07" in bf16 and "CPU B" in bf16
    assert "`record` has runs from 2 precision/device combinations" in markdown
    assert (tmp_path / "table.md").read_text() == markdown


@pytest.mark.parametrize("drop", [(), ("precision", "device")])
def test_table_of_one_machine_has_no_note(trained_run: Path, tmp_path: Path, drop: tuple[str, ...]) -> None:
    summary = json.loads((trained_run / "summary.json").read_text())
    for key in drop:  # summaries written before provenance was recorded
        summary.pop(key)
    for seed in (1, 2):
        (tmp_path / str(seed)).mkdir()
        (tmp_path / str(seed) / "summary.json").write_text(json.dumps({**summary, "seed": seed}))
    markdown = write_table([tmp_path], tmp_path / "table")
    assert markdown.count("| record |") == 1 and "Note:" not in markdown
    if drop:
        assert "| unknown | unknown |" in markdown
