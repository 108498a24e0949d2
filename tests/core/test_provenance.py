"""Every summary says where its figures came from (src.core.provenance): the precision, the machine, the package
versions, the code version and the command-line overrides."""

from __future__ import annotations

import json
import re
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from src.backprop.runs import run as run_backprop
from src.core.hardware import cpu_model, native_precision
from src.eval import evaluate
from tests.helpers import REPO, compose_train

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
                       "data.eval_batch_size=64", f"precision={trained['precision']}"],
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
