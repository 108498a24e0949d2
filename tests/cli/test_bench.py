"""`make bench` (src.bench): its report on tiny data, and its bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from src.bench import main as bench_main
from src.bench import run_checked
from src.core.hardware import cpu_has_native_bf16
from tests.helpers import TINY_TEST


@pytest.mark.slow
def test_bench_reports_machine_precisions_and_ratios(
    tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The variants asked for run for real, each in its own process (3 steps of batch 8 on the tiny files), with the
    reference always there: (c32), and (c16) where bf16 only emulated skips it. (b) differs from (c32) only in its
    data pipeline and (c16) only in its precision, which the suite's other runs check."""
    monkeypatch.setenv("DATA_DIR", str(tiny_mnist))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the variants' processes, as the suite's other commands
    native = cpu_has_native_bf16()
    variants = "c32_tensor" if native else "c32_tensor,c16_tensor"
    bench_main(["--steps", "3", "--repeats", "1", "--batch-size", "8", "--no-compile", "--variants", variants])
    output = capsys.readouterr().out
    assert output.startswith("machine: ") and f"native bf16 on the CPU: {'yes' if native else 'no'}" in output
    report = json.loads(output.strip().splitlines()[-1])
    assert list(report["precision"]) == ["a_reference", "c32_tensor"] and report["precision"]["c32_tensor"] == "32-true"
    assert ("c16_tensor skipped: bf16 is only emulated" in output) is not native
    assert set(report["ratios"]) == {"c32/a"}
    assert all(ratio > 0 for ratio in report["ratios"].values())
    assert f"c32/a = {report['ratios']['c32/a']:.2f}x" in output
    steps = report["step_alone_img_per_s"]
    assert "step fp32" in steps and not any("compile" in label for label in steps)  # --no-compile
    assert all(len(runs) == 1 for runs in report["runs"].values())
    for variant, runs in report["runs"].items():  # over the tiny test file's images, not MNIST's 10,000
        assert report["eval_img_per_s"][variant] == pytest.approx(TINY_TEST / runs[0]["test_seconds"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "error: --steps=0, --repeats=3, --batch-size=64 must be >= 1"),
        (["--repeats", "-1"], "error: --steps=300, --repeats=-1, --batch-size=64 must be >= 1"),
        (
            ["--variants", "c32_tensor,c8"],
            "error: --variants=c32_tensor,c8 names c8; the variants are a_reference, "
            "b_torchvision, c32_tensor, c16_tensor",
        ),
    ],
)
def test_bench_refuses_bad_numbers_in_one_line(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        bench_main(args)


def test_bench_refuses_a_data_dir_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before anything is timed: one line, not a failed variant's traceback minutes later."""
    not_a_folder = tmp_path / "mnist.tar"
    not_a_folder.write_text("")
    monkeypatch.setenv("DATA_DIR", str(not_a_folder))
    with pytest.raises(SystemExit, match=f"error: data.root={not_a_folder} is a file"):
        bench_main(["--steps", "1"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("child", "message", "shown"),
    [  # bad input in the variant: its one line; a bug: its traceback shown in full, then the line
        ("print('loading', file=sys.stderr); sys.exit('error: no GPU here')", r"\(status 1\): no GPU here$", ""),
        ("raise ValueError('a bug')", r"\(status 1\): its output is above$", "ValueError: a bug"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", r"\(killed by signal 9\): no output$", ""),
    ],
)
def test_a_failed_variant_stops_the_bench(
    child: str, message: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match=rf"^error: variant c32_tensor stopped {message}"):
        run_checked([sys.executable, "-c", f"import sys; {child}"], "c32_tensor")
    stderr = capsys.readouterr().err
    assert (shown in stderr and "Traceback" in stderr) if shown else stderr == ""
