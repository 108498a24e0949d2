"""What a multirun leaves when it ends (src.core.sweep): a failed job is named and does not stop the others."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import TINY_RUN, cli_in_process


def test_failed_job_does_not_stop_the_multirun(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    error = cli_in_process(
        "src.train", "-m", "optimizer.lr=-1,0.01", *TINY_RUN, "trainer.max_epochs=1", "logger=none",
        f"hydra.sweep.dir={tmp_path}", data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert (tmp_path / "1_dropout_steplr_seed1" / "summary.json").is_file(), "the good job ran after the failed one"
    assert (tmp_path / "0_dropout_steplr_seed1" / "FAILED").read_text() == "error: optimizer.lr=-1.0 must be > 0\n"
    assert (tmp_path / "results.md").is_file()
    assert error == "error: 1 of 2 jobs failed: 0_dropout_steplr_seed1 (error: optimizer.lr=-1.0 must be > 0)"
    # Another multirun into the same dir (as a search's next session is) answers for its own jobs only.
    error = cli_in_process(
        "src.train", "-m", "seed=2", *TINY_RUN, "trainer.max_epochs=1", "logger=none", f"hydra.sweep.dir={tmp_path}",
        data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert error is None and (tmp_path / "0_dropout_steplr_seed2" / "summary.json").is_file()
