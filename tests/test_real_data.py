"""On the real MNIST (DATA_DIR): skipped, with the reason shown, when the files are absent."""

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.real_data
def test_one_epoch_of_dropout_steplr_reaches_97_percent(real_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(
        "model=dropout_steplr", "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={tmp_path}",
        data_dir=real_mnist,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_acc"] >= 97.0, summary
