"""On the real MNIST (DATA_DIR): skipped, with the reason shown, when the files are absent."""

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

# Test accuracy after one epoch swings by seed (measured for dropout_steplr with seed 1 on CPU: 96.83 % with the
# defaults, 96.39 % on the torchvision pipeline in fp32; 91.9-97.7 % over seeds 1-3 on a GPU; 98.0-98.4 % after two
# epochs), so a 97 % bar on one epoch would fail honest runs.
ONE_EPOCH_FLOOR = 95.0


@pytest.mark.real_data
def test_one_epoch_of_dropout_steplr_learns_real_mnist(real_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(
        "model=dropout_steplr", "seed=1", "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={tmp_path}",
        data_dir=real_mnist,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["params"] == 9_320
    assert summary["test_acc"] >= ONE_EPOCH_FLOOR, summary
