"""Shared fixtures and runners.

Three ways to run the app, cheapest first:
- `train_in_process`: compose conf/train.yaml, set Hydra's config, call `src.mnist.run.train` (what Hydra's job does);
- `cli_in_process`: `python -m MODULE ARGS` inside this process (runpy runs the module's `__main__` block, so Hydra's
  @hydra.main parses the arguments, makes the run dir and calls the entry point; the one-line error is the message
  of the SystemExit it raises);
- `run_cli`: the real command line in a subprocess. Only the tests of a command-line contract use it (what only a
  fresh interpreter shows: the exit status and stderr, DDP's relaunch, launchers that start processes); they are
  marked `slow`.

`trained_run` is the one tiny training run of a test process (model=record, 2 epochs, TensorBoard, checkpoints,
EMA) that the summary, TensorBoard, eval, predict, aggregate, safety and provenance tests all read.
"""

from __future__ import annotations

import copy
import logging
import os
import runpy
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from src.core.logs import IRRELEVANT_WARNINGS
from src.core.resolvers import register_resolvers
from src.mnist.data import missing_raw_files

register_resolvers()  # what the entry points do before Hydra composes

# One intra-op thread for what the suite trains, here and in the commands it starts (OMP_NUM_THREADS, run_cli): the
# nets and batches are tiny, and on a 2-core machine shared with other work two OpenMP threads spin-wait for each
# other (measured at load 4-5: a tiny 2-epoch run took 33 s on 2 threads, 3-5 s on 1).
THREADS = 1
torch.set_num_threads(THREADS)


def pytest_configure(config: pytest.Config) -> None:
    """The library warnings the entry points filter (src.core.logs), filtered in every test too: pytest resets the
    warnings filters around each test, so the ones a run sets in-process would not hold for the next."""
    for message, module in IRRELEVANT_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}::{module}")


REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN, TINY_TEST = 320, 160

TINY_RUN = (
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "data.num_workers=0",
    "data.eval_batch_size=64",
    "data.batch_size=32",
)
# The shared run: `record` (one-cycle schedule, EMA, augmentation) on the torchvision pipeline, so that the eval of
# its checkpoint (on the default tensor pipeline) also checks that both pipelines give the same test figures; at
# batch 8, 2 × 40 steps: enough to learn the tiny digits (2 × 10 steps at batch 32 are not).
TRAINED_RUN = ("model=record", *TINY_RUN, "data.batch_size=8", "data.pipeline=torchvision")


def noise(count: int, seed: int) -> torch.Tensor:
    """Images with content everywhere (uniform uint8 noise, as ToTensor scales it): any pixel taken from the wrong
    place, or filled where it should not be, shows."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, 28, 28), generator=generator).float() / 255


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes `array` (uint8) as an IDX file: the 0x08 type code, the dimension count, big-endian sizes, the bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


# Each digit's 5×7 bitmap-font glyph (rows of 5 pixels, 1 = ink): shapes, as in MNIST, so that nets that pool over
# the whole image (every recipe's) learn them within a few dozen steps, however the augmentation moves them.
FONT = (
    "01110 10001 10011 10101 11001 10001 01110", "00100 01100 00100 00100 00100 00100 01110",
    "01110 10001 00001 00010 00100 01000 11111", "11111 00010 00100 00010 00001 10001 01110",
    "00010 00110 01010 10010 11111 00010 00010", "11111 10000 11110 00001 00001 10001 01110",
    "00110 01000 10000 11110 10001 10001 01110", "11111 00001 00010 00100 01000 01000 01000",
    "01110 10001 10001 01110 10001 10001 01110", "01110 10001 10001 01111 00001 00010 01100",
)  # fmt: skip
GLYPHS = [np.kron([[int(ink) for ink in row] for row in glyph.split()], np.ones((3, 3), dtype=int)) for glyph in FONT]


def tiny_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28×28 'digits': the label's glyph 3× enlarged (15×21 px, white, centred) over faint noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 40, size=(count, 28, 28))
    for image, label in zip(images, labels, strict=True):
        image[4:25, 7:22][GLYPHS[label] == 1] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root in torchvision's layout (MNIST/raw/*-ubyte) with 320 train and 160 test images (`tiny_digits`)."""
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


# write-up 001's transforms, which the augmentation tests draw from
SEED_AFFINE = list(instantiate(compose_train("augmentation=seed_affine").augmentation.transforms))


def compose_task(*overrides: str) -> DictConfig:
    """What Hydra hands a run: the composed config without Hydra's own node (parts of which Hydra fills at run time)."""
    cfg = compose_train(*overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@contextmanager
def logged_to(path: Path) -> Iterator[None]:
    """The project's INFO lines (recipe, parameter count, one line per epoch) into `path`, as Hydra's job logging
    writes them into the run dir's train.log."""
    logger, handler = logging.getLogger("src"), logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


def train_in_process(*overrides: str, run_dir: Path, data_dir: Path) -> dict[str, Any]:
    """One MNIST run as Hydra's job would run it, without a new interpreter: the config composed from `overrides`
    (plus `data.root=data_dir`), Hydra's runtime config pointing at `run_dir` (where checkpoints and TensorBoard
    write), `.hydra/config.yaml` saved there, then `src.mnist.run.train`. Returns the summary."""
    cfg = compose_train(*overrides, f"data.root={data_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir.resolve())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    task_cfg = copy.deepcopy(cfg)
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(task_cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(cfg.hydra.overrides.task)), run_dir / ".hydra" / "overrides.yaml")

    from src.mnist.run import train  # noqa: PLC0415 - Lightning's import is paid by the tests that train

    with logged_to(run_dir / "train.log"):
        return train(task_cfg, run_dir)


@contextmanager
def restored_logging() -> Iterator[None]:
    """Hydra's @hydra.main configures the root logger (console and run-dir file handlers); put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def cli_in_process(
    module: str, *args: str, data_dir: Path | None, monkeypatch: pytest.MonkeyPatch, cwd: Path | None = None
) -> str | None:
    """`python -m MODULE ARGS` run inside this process by runpy, `__main__` block and all. Returns None when the
    command finished, or the message of the SystemExit it ended with (the line a user sees: `error: ...`)."""
    with monkeypatch.context() as patched, restored_logging(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)  # runpy on an imported module
        patched.setattr(sys, "argv", [module, *args])
        patched.setenv("HYDRA_FULL_ERROR", "0")
        if data_dir is not None:
            patched.setenv("DATA_DIR", str(data_dir))
        if cwd is not None:
            patched.chdir(cwd)
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exit_:
            return None if exit_.code in (None, 0) else str(exit_.code)
    return None


def run_cli(
    *args: str,
    data_dir: Path,
    module: str = "src.train",
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
):
    """`python -m MODULE ARGS` in a new interpreter, as a user would run it, with DATA_DIR set."""
    full_env = {
        **os.environ, "DATA_DIR": str(data_dir), "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": str(THREADS), **(env or {}),
    }  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600
    )


def assert_one_line_error(result, *fragments: str) -> None:
    """A subprocess that stopped with a non-zero status and one `error: ...` line, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last_line


@pytest.fixture(scope="session")
def trained_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run dir of one tiny `model=record` run: 2 epochs of 40 steps on the tiny digits, with the TensorBoard
    logger, checkpoints/last.ckpt and the best checkpoint, the EMA, summary.json, .hydra/config.yaml, train.log."""
    run_dir = tmp_path_factory.mktemp("trained") / "record"
    train_in_process(*TRAINED_RUN, run_dir=run_dir, data_dir=tiny_mnist)
    return run_dir


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
