"""What the tests share: the runners, the tiny data, the recipes' figures and a few tables of inputs.

Three ways to run the app, cheapest first:
- `train_in_process`: compose conf/train.yaml, set Hydra's config, call `src.mnist.run.train` (what Hydra's job does);
- `cli_in_process`: `python -m MODULE ARGS` inside this process (runpy runs the module's `__main__` block, so Hydra's
  @hydra.main parses the arguments, makes the run dir and calls the entry point; the one-line error is the message
  of the SystemExit it raises);
- `run_cli`: the real command line in a subprocess. Only the tests of a command-line contract use it (what only a
  fresh interpreter shows: the exit status and stderr, DDP's relaunch, launchers that start processes); they are
  marked `slow`.

Plain functions and constants only: the fixtures (the tiny data root, the shared training run) are in conftest.py.
Nothing here composes a config or reads a file when it is imported.
"""

from __future__ import annotations

import copy
import functools
import glob
import logging
import os
import re
import runpy
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
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

from src.core.cli import module_installed

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread for what the suite trains, here and in the commands it starts (OMP_NUM_THREADS, run_cli): the
# nets and batches are tiny, and on a 2-core machine shared with other work two OpenMP threads spin-wait for each
# other (measured at load 4-5: a tiny 2-epoch run took 33 s on 2 threads, 3-5 s on 1). conftest.py sets it.
THREADS = 1

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

needs_sweep_extras = pytest.mark.skipif(
    not all(map(module_installed, ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher",
                            "optuna"))),
    reason="the sweep extras are not installed: make install (or pip install -e '.[sweep]')",
)  # fmt: skip


# --- the recipes' parameter counts: README.md's recipe table is the one place they are written down


@functools.cache
def readme_recipe_params() -> dict[str, int]:
    """recipe → its parameter count, from README.md's recipe table: the table whose header starts with `| recipe |
    net ... | params |`, one row per recipe starting with `| \\`recipe\\``, the count the first number (thousands
    separated by commas) of the third column."""
    counts: dict[str, int] = {}
    in_table = False
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 3 and cells[0] == "recipe" and cells[1].startswith("net") and cells[2] == "params":
            in_table = True
        elif not cells:
            in_table = False
        elif in_table and (name := re.match(r"`([\w-]+)`", cells[0])):
            count = re.search(r"\d{1,3}(?:,\d{3})+|\d+", cells[2])
            assert count, f"README.md's row of recipe {name[1]} has no parameter count: {cells[2]!r}"
            assert name[1] not in counts, f"README.md's recipe table has two rows for {name[1]}"
            counts[name[1]] = int(count[0].replace(",", ""))
    return counts


def recipe_params(recipe: str) -> int:
    """The parameter count README.md's recipe table gives `recipe`."""
    counts = readme_recipe_params()
    assert recipe in counts, f"README.md's recipe table has no row for {recipe} (rows: {', '.join(counts)})"
    return counts[recipe]


# --- tiny data


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


def write_tiny_mnist(root: Path) -> Path:
    """`root` as a data root in torchvision's layout (MNIST/raw/*-ubyte): 320 train and 160 test `tiny_digits`."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, count, seed in (("train", TINY_TRAIN, 0), ("t10k", TINY_TEST, 1)):
        images, labels = tiny_digits(count, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


def broken_copy(tiny_mnist: Path, tmp_path: Path, name: str, content: bytes) -> Path:
    """A copy of the tiny data root with file `name` replaced by `content`."""
    root = tmp_path / "broken"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (tiny_mnist / "MNIST" / "raw").iterdir():
        (raw / path.name).write_bytes(content if path.name == name else path.read_bytes())
    return root


class ShellOnUnpickle:
    """What a malicious checkpoint holds: unpickling it calls os.system, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


# --- configs and runs


def compose_train(*overrides: str) -> DictConfig:
    """conf/train.yaml composed as `python -m src.train OVERRIDES` would compose it (hydra's choices included)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


@functools.cache
def seed_affine_transforms() -> list[torch.nn.Module]:
    """Write-up 001's transforms (`augmentation=seed_affine`), which the augmentation tests draw from; composed on
    first use, then shared."""
    return list(instantiate(compose_train("augmentation=seed_affine").augmentation.transforms))


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


def start_cli(
    *args: str, data_dir: Path, module: str = "src.train", env: dict[str, str] | None = None, cwd: Path = REPO,
    stderr: Path | None = None,
) -> subprocess.Popen:  # fmt: skip
    """`python -m MODULE ARGS` started in a new interpreter, as a user would start it, with DATA_DIR set. Its output is
    captured as text; with `stderr`, its stderr is appended to that file and its stdout dropped instead, for a command
    left running in the background (a pipe nobody reads would fill and stall it)."""
    full_env = {
        **os.environ, "DATA_DIR": str(data_dir), "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": str(THREADS), **(env or {}),
    }  # fmt: skip
    command = [sys.executable, "-m", module, *args]
    if stderr is None:
        return subprocess.Popen(
            command, cwd=cwd, env=full_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    with stderr.open("a") as sink:
        return subprocess.Popen(command, cwd=cwd, env=full_env, text=True, stdout=subprocess.DEVNULL, stderr=sink)


def sigint_as_at_a_terminal() -> None:
    """Ctrl-C as a terminal's foreground command has it, for this process and the commands it starts: one started as
    a background job (`make test &`, some CI runners) inherits SIGINT ignored, which interruption checks must send."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# What must match between a run stopped and continued and the same run uninterrupted: a summary less its wall-clock
# figures, the resume marker and the command line.
NOT_COMPARED = {"train_seconds", "test_seconds", "seconds_to_99_4", "resumed_from", "overrides"}


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """`summary` less `NOT_COMPARED` and its rows' times."""
    rows = [{key: value for key, value in row.items() if key not in ("seconds", "since_start")}
            for row in summary["per_epoch"]]  # fmt: skip
    return {**{key: value for key, value in summary.items() if key not in NOT_COMPARED}, "per_epoch": rows}


def run_cli(*args: str, data_dir: Path, module: str = "src.train", env: dict[str, str] | None = None,
            cwd: Path = REPO) -> subprocess.CompletedProcess:  # fmt: skip
    """`python -m MODULE ARGS` in a new interpreter, run to its end."""
    process = start_cli(*args, data_dir=data_dir, module=module, env=env, cwd=cwd)
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_one_line_error(result, *fragments: str) -> None:
    """A subprocess that stopped with a non-zero status and one `error: ...` line, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last_line


# --- tables of inputs that tests in two folders share

# Each bad value of an MNIST run and the one line that names it: tests/mnist/test_schema.py checks every one,
# tests/cli/test_train.py the command-line contract of the first.
BAD_VALUES = [
    ("optimizer.lr=0", "optimizer.lr=0.0 must be > 0"),
    ("optimizer.lr=fast", "optimizer.lr='fast' is not a valid float"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be >= 1"),
    ("data.batch_size=0", "data.batch_size=0 must be >= 1"),
    ("seed=-1", "seed=-1 must be in [0, 4294967295] (the range numpy's generator takes)"),
    ("model.net.dropout=1.0", "model.net.dropout=1.0 must be in [0, 1)"),
    ("model.net.dropout=-0.1", "model.net.dropout=-0.1 must be in [0, 1)"),
    ("model.label_smoothing=1", "model.label_smoothing=1.0 must be in [0, 1)"),
    ("model=record callbacks.ema.decay=1", "callbacks.ema.decay=1.0 must be in (0, 1)"),
    ("data.val_split=abc", "data.val_split='abc' is not a valid int"),
    ("data.val_split=1.5", "data.val_split=1.5 is not a valid int"),
    ("distill=teacher distill.checkpoint=t.ckpt distill.weight=abc", "distill.weight='abc' is not a valid float"),
    (
        "model=tiny trainer.max_steps=100",
        "data.unaugmented_last_epochs=4 counts back from trainer.max_epochs, and trainer.max_steps=100 may stop "
        "the run before those epochs; set data.unaugmented_last_epochs=0 or trainer.max_steps=-1",
    ),
    ("optimized_metric=test_loss", "optimized_metric='test_loss' is not one of test_acc, val_acc, best_val_acc"),
    (
        "optimized_metric=val_acc trainer.max_epochs=3 trainer.check_val_every_n_epoch=2",
        "optimized_metric='val_acc' is the last epoch's, and trainer.check_val_every_n_epoch=2 does not validate the "
        "last of trainer.max_epochs=3; use a max_epochs divisible by it, or best_val_acc",
    ),
    ("test=false", "optimized_metric='test_acc' needs test=true; with test=false use val_acc or best_val_acc"),
    (
        "distill=teacher",
        "distill.checkpoint has no value (??? in the config); give one on the command line: distill.checkpoint=...",
    ),
]

# The backprop exercise's network as the spreadsheet starts it, and the write-up's learning rates: tests/backprop/
# test_network.py, test_runs.py and test_workbook.py all start from them.
BACKPROP_DEFAULTS = {
    "inputs": [0.05, 0.1],
    "targets": [0.5, 0.5],
    "weights": [0.15, 0.2, 0.25, 0.3, 0.4, 0.45, 0.5, 0.55],
}
PUBLISHED_LRS = (0.1, 0.2, 0.5, 0.8, 1.0, 2.0)


# --- a PostgreSQL server


def postgres_bin_dir() -> Path | None:
    """Where this machine's PostgreSQL server binaries are (Debian keeps them off PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [shutil.which("pg_ctl")]
    return None if found[-1] is None else Path(found[-1]).parent


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server of its own on a free localhost port (a cluster in a temp dir, trust authentication), its
    URL, stopped and removed afterwards. PostgreSQL refuses to run as root: as root the cluster belongs to `nobody`,
    in a dir of /tmp it can reach."""
    bin_dir = postgres_bin_dir()
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="postgres-") as name:
        folder = Path(name)
        if as_user:
            shutil.chown(folder, "nobody")
        data = folder / "data"
        run = dict(check=True, capture_output=True, text=True, timeout=120)
        subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"], **run)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = [bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "start"]
        subprocess.run([*as_user, *start], **run)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], **run)


def new_database(url: str, name: str, password: str | None = None) -> str:
    """A new, empty database `name` on the server of `url` (its tables none), as a URL with `password` in it (the
    throwaway server trusts any)."""
    import sqlalchemy  # noqa: PLC0415 - the sweep extras', for the PostgreSQL tests only

    from src.core.search import database_url  # noqa: PLC0415 - imports Optuna, installed with them

    engine = sqlalchemy.create_engine(database_url(url), isolation_level="AUTOCOMMIT",
                                      poolclass=sqlalchemy.pool.NullPool)  # fmt: skip
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return sqlalchemy.engine.make_url(url).set(database=name, password=password).render_as_string(hide_password=False)
