"""Fixtures only the command-line tests use: the real MNIST files, an eval of the shared training run, and a
throwaway PostgreSQL server."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.mnist.data import missing_raw_files
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own on a free localhost port (the machine's PostgreSQL binaries, a cluster in a
    temp dir, trust authentication), stopped after the tests; skipped when no PostgreSQL binaries are installed.
    PostgreSQL refuses to run as root: as root the cluster belongs to `nobody`, in a dir of /tmp it can reach."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [shutil.which("pg_ctl")]
    if found[-1] is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl, initdb): install PostgreSQL to run the shared-study tests")
    bin_dir = Path(found[-1]).parent
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix="postgres-") as name:
        folder = Path(name)
        if as_user:
            shutil.chown(folder, "nobody")
        data, port = folder / "data", free_port()
        run = dict(check=True, capture_output=True, text=True, timeout=120)
        subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"], **run)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = [bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "start"]
        subprocess.run([*as_user, *start], **run)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], **run)
