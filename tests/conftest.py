"""Shared fixtures: tiny MNIST files in the real IDX format, the CLI in a subprocess, the real data when present."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.core.resolvers import register_resolvers
from src.mnist.data import missing_raw_files

register_resolvers()  # what the entry points do before Hydra composes

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN, TINY_TEST = 320, 160


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes `array` (uint8) as an IDX file: the 0x08 type code, the dimension count, big-endian sizes, the bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28×28 'digits': a bright bar whose row encodes the label, over faint noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 40, size=(count, 28, 28))
    for image, label in zip(images, labels, strict=True):
        image[4 + 2 * label : 6 + 2 * label, 6:22] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root in torchvision's layout (MNIST/raw/*-ubyte) with 320 train and 160 test images."""
    root = tmp_path_factory.mktemp("tiny_mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, count, seed in (("train", TINY_TRAIN, 0), ("t10k", TINY_TEST, 1)):
        images, labels = tiny_digits(count, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    root = Path(os.environ.get("DATA_DIR", "data")).resolve()
    if missing_raw_files(root):
        pytest.skip(f"real MNIST not found under {root}/MNIST/raw: set DATA_DIR to run the real-data tests")
    return root


def compose_train(*overrides: str) -> DictConfig:
    """conf/train.yaml composed as `python -m src.train OVERRIDES` would compose it (hydra's choices included)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def run_cli(*overrides: str, data_dir: Path, module: str = "src.train", env: dict[str, str] | None = None):
    """Runs `python -m src.train OVERRIDES` as a user would, from the repo root, with DATA_DIR set."""
    full_env = {**os.environ, "DATA_DIR": str(data_dir), "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


TINY_RUN = (
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "data.num_workers=0",
    "data.eval_batch_size=64",
    "data.batch_size=32",
)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last_line
