"""Where a run writes (src.core.rundirs): its own new dir, and never a dir that holds another run."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from src.core.rundirs import is_finished, latest_unfinished_run
from tests.helpers import TINY_RUN, cli_in_process, compose_train


def test_runs_started_together_get_their_own_dirs(tmp_path: Path) -> None:
    """A new run's dir is `<time to the microsecond>-<pid>_<run name>`: two processes never share a pid, so runs
    started in the same microsecond still get their own dirs."""
    name = Path(compose_train(f"runs_dir={tmp_path}").hydra.run.dir).relative_to(tmp_path).as_posix()
    stamp = re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}-(\d+)_dropout_steplr_seed1", name)
    assert stamp is not None and int(stamp[1]) == os.getpid(), name


@pytest.mark.parametrize("continued_from", [None, "another run", "the finished run itself"])
def test_a_dir_holding_a_run_is_never_reused(
    continued_from: str | None, trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    """Not even by a run continuing from a checkpoint (only `resume=true`, or a `ckpt_path` of the unfinished run in
    that dir, continues in it)."""
    finished = tmp_path / "finished"
    shutil.copytree(trained_run, finished)
    before = (finished / "summary.json").read_bytes()
    source = {None: None, "another run": trained_run, "the finished run itself": finished}[continued_from]
    ckpt = [f"ckpt_path={source / 'checkpoints' / 'last.ckpt'}"] if source else []
    error = cli_in_process("src.train", *TINY_RUN, *ckpt, "logger=none", f"hydra.run.dir={finished}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == f"error: {finished} already holds another run's files; give hydra.run.dir a new folder"
    assert (finished / "summary.json").read_bytes() == before
    last = Path("checkpoints") / "last.ckpt"
    assert (finished / last).read_bytes() == (trained_run / last).read_bytes()


def test_a_run_a_signal_stopped_is_unfinished(tmp_path: Path) -> None:
    """Its summary.json records the interruption: resume=true still continues it."""
    run_dir = tmp_path / "2026-01-01_00-00-00-000000-1_tiny_seed1"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run_dir / "summary.json").write_text(json.dumps({"interrupted": {"signal": "SIGTERM", "epoch": 2, "step": 9}}))
    assert not is_finished(run_dir)
    assert latest_unfinished_run(tmp_path, "tiny_seed1") == run_dir
    (run_dir / "summary.json").write_text(json.dumps({"epochs": 2}))
    assert is_finished(run_dir) and latest_unfinished_run(tmp_path, "tiny_seed1") is None
