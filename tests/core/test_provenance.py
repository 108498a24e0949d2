"""Every summary says where its figures came from, and a seed table never averages two machines into one mean."""

from __future__ import annotations

import json
import re
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from src.backprop.runs import run as run_backprop
from src.core.hardware import cpu_model, native_precision
from src.eval import evaluate
from src.mnist.report import write_table
from tests.conftest import REPO, compose_train

PROVENANCE_KEYS = {
    "precision", "device", "device_type", "bf16_native", "threads", "versions", "git_commit", "git_dirty", "overrides",
}  # fmt: skip


def assert_provenance(record: dict, precision: str) -> None:
    assert record.keys() >= PROVENANCE_KEYS
    assert record["precision"] == precision
    assert record["device_type"] == "cpu" and record["device"].startswith(cpu_model())
    assert record["threads"] == torch.get_num_threads() and isinstance(record["bf16_native"], bool)
    assert record["versions"] == {"torch": torch.__version__, "pytorch_lightning": pl.__version__,
                                  "hydra": hydra.__version__}  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"]) and isinstance(record["git_dirty"], bool)
    assert isinstance(record["overrides"], list)


def test_training_summary_records_precision_machine_versions_code_and_overrides(trained_run: Path) -> None:
    summary = json.loads((trained_run / "summary.json").read_text())
    assert_provenance(summary, precision=native_precision("cpu"))  # the run left the precision at its default
    assert "model=record" in summary["overrides"]


def test_eval_writes_eval_json_with_provenance(trained_run: Path, tiny_mnist: Path, tmp_path: Path) -> None:
    """At the precision the run trained in, the eval gives its test figure; at another one a digit or two of the tiny
    test set can go the other way (bf16 against fp32), so the precision is the run's, named explicitly."""
    trained = json.loads((trained_run / "summary.json").read_text())
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"data.root={tiny_mnist}",
                       "data.eval_batch_size=64", f"trainer.precision={trained['precision']}"],
            return_hydra_config=True,
        )  # fmt: skip
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    evaluate(cfg, tmp_path)
    assert not (tmp_path / "summary.json").exists()
    record = json.loads((tmp_path / "eval.json").read_text())
    assert_provenance(record, precision=trained["precision"])
    assert record["test_acc"] == trained["test_acc"]


def test_backprop_run_writes_a_summary_with_provenance(tmp_path: Path) -> None:
    cfg = compose_train("task=backprop", "task.lr=0.5", "task.iterations=3")
    final = run_backprop(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert_provenance(summary, precision="64-true (numpy float64)")
    assert summary["E_total"] == final and summary["iterations"] == 3


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
