"""The suite's set-up and its shared fixtures; the plain helpers the tests import are in tests/helpers.py.

`trained_run` is the one tiny training run of a test process (model=record, 2 epochs, TensorBoard, checkpoints,
EMA) that the summary, TensorBoard, eval, predict, aggregate, safety and provenance tests all read; `exported` is its
export to ONNX (fp32 and int8), which the export tests and scripts/bench_inference.py's read; `postgres_url` a
throwaway PostgreSQL server. The fixtures only the command-line tests use (`real_mnist`, `evaluated_run`) are in
tests/cli/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from src.core.logs import IRRELEVANT_WARNINGS
from src.core.resolvers import register_resolvers
from tests.helpers import (
    THREADS,
    TRAINED_RUN,
    ShellOnUnpickle,
    cli_in_process,
    postgres_bin_dir,
    sigint_as_at_a_terminal,
    throwaway_postgres,
    train_in_process,
    write_tiny_mnist,
)

register_resolvers()  # what the entry points do before Hydra composes
torch.set_num_threads(THREADS)


def pytest_configure(config: pytest.Config) -> None:
    """The library warnings the entry points filter (src.core.logs), filtered in every test too: pytest resets the
    warnings filters around each test, so the ones a run sets in-process would not hold for the next."""
    for message, module in IRRELEVANT_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}::{module}")
    sigint_as_at_a_terminal()  # the interruption and dashboard tests send Ctrl-C


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `slow` tests (new interpreters, real MNIST) spread evenly over the run, in their order, instead of one after
    another as the folders list them (most are command-line contracts, in tests/cli/): pytest-xdist starts each
    worker on its own stretch of this order, so each gets its share of them."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    if slow and fast:
        place = {id(item): index / len(fast) for index, item in enumerate(fast)}
        place |= {id(item): (index + 0.5) / len(slow) for index, item in enumerate(slow)}
        items.sort(key=lambda item: place[id(item)])


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Each test starts on the suite's thread count, whatever a test before it in this worker set: runs compared
    figure for figure (a resumed run against its reference) must compute on the same number of threads."""
    torch.set_num_threads(THREADS)
    yield


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root in torchvision's layout (MNIST/raw/*-ubyte) with 320 train and 160 test images (`tiny_digits`)."""
    return write_tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture(scope="session")
def trained_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run dir of one tiny `model=record` run: 2 epochs of 40 steps on the tiny digits, with the TensorBoard
    logger, checkpoints/last.ckpt and the best checkpoint, the EMA, summary.json, .hydra/config.yaml, train.log."""
    run_dir = tmp_path_factory.mktemp("trained") / "record"
    train_in_process(*TRAINED_RUN, run_dir=run_dir, data_dir=tiny_mnist)
    return run_dir


@pytest.fixture
def pickle_payload(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint whose unpickling would run a shell command (`ShellOnUnpickle`), and the file that command would
    create."""
    marker, checkpoint = tmp_path / "payload_ran", tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "run_config": ShellOnUnpickle(marker)}, checkpoint)
    return checkpoint, marker


@pytest.fixture(scope="session")
def exported(trained_run: Path, tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m src.export ckpt_path=<trained_run's last.ckpt> quantize=int8`, in this process. int8 may lose up
    to 2 of the 160 tiny test images (the bar for the real test set is 0.1 point)."""
    out = tmp_path_factory.mktemp("exported") / "export"
    with pytest.MonkeyPatch.context() as monkeypatch:
        error = cli_in_process("src.export", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", "quantize=int8",
                               "int8_max_loss=1.25", "latency_runs=20", f"hydra.run.dir={out}", data_dir=tiny_mnist,
                               monkeypatch=monkeypatch)  # fmt: skip
    assert error is None, error
    return out


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (skipped where no PostgreSQL binaries are installed)."""
    if postgres_bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl, initdb): install PostgreSQL to run the PostgreSQL tests")
    with throwaway_postgres() as url:
        yield url
