"""Fixtures only the command-line tests use: the real MNIST files and an eval of the shared training run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.mnist.files import missing_raw_files
from tests.helpers import cli_in_process


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    root = Path(os.environ.get("DATA_DIR", "data")).resolve()
    if missing_raw_files(root):
        pytest.skip(f"real MNIST not found under {root}/MNIST/raw: set DATA_DIR to run the real-data tests")
    return root


@pytest.fixture(scope="session")
def evaluated_run(trained_run: Path, tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run dir of `python -m src.eval ckpt_path=<trained_run's last.ckpt>`, run in this process."""
    eval_dir = tmp_path_factory.mktemp("evaluated") / "eval"
    with pytest.MonkeyPatch.context() as monkeypatch:
        error = cli_in_process(
            "src.eval", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={eval_dir}",
            data_dir=tiny_mnist, monkeypatch=monkeypatch,
        )  # fmt: skip
    assert error is None, error
    return eval_dir
