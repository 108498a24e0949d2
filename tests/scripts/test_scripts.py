"""Smoke tests of scripts/: each script runs on tiny inputs (the suite's tiny digits, its one trained run, a few
steps) and what it prints or returns is checked, so that a change in src/ that breaks a script fails here."""

from __future__ import annotations

import functools
import importlib
import json
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from tests.helpers import needs_sweep_extras

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
VAL_SPLIT = 64  # of the tiny digits' 320 training images


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch):
    """Imports scripts/NAME.py as `python scripts/NAME.py` would find it (the folder first on the import path)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    return load


@pytest.fixture
def held_out(trained_run: Path, tiny_mnist: Path) -> tuple[str, list[str]]:
    """The shared run's checkpoint and the options that hold 64 of the tiny training images out."""
    return str(trained_run / "checkpoints" / "last.ckpt"), ["--data-root", str(tiny_mnist), "--val-split", "64"]


def test_shift_sets_agree_with_the_views_and_the_error_profile(script, held_out, capsys) -> None:
    ckpt, options = held_out
    sets = script("heldout_shift_sets").main([ckpt, *options])[ckpt]
    assert list(sets) == ["none", "S4", "S8", "S8b", "S12"]
    assert all(
        0 <= acc <= 100 and (acc * VAL_SPLIT / 100) == pytest.approx(round(acc * VAL_SPLIT / 100))
        for acc in sets.values()
    )
    assert sets["S8"] > 50  # `record`'s own set, on images the run learned
    assert capsys.readouterr().out.splitlines()[2] == f"{ckpt} S8 {sets['S8']:.2f} %"

    views = script("heldout_test_time_views").main([ckpt, *options, "--degrees", "10"])
    assert list(views) == ["shifts", "+ ±10°", "+ scales", "shifts, BatchNorm recomputed"]
    assert views["shifts"] == pytest.approx(sets["S8"])  # the checkpoint's own shifts, as stored: S8
    assert all(0 <= acc <= 100 for acc in views.values())

    profile = script("heldout_error_profile").main([ckpt, ckpt, *options])  # one run twice: every miss is shared
    assert profile["runs"][ckpt]["held_out"] == pytest.approx(sets["S8"])
    assert profile["averaged"] == pytest.approx(sets["S8"])
    wrong = round(VAL_SPLIT * (100 - sets["S8"]) / 100)
    assert profile["missed_by"] == {1: 0, 2: wrong}
    assert sum(count for _, count in profile["per_digit"]) == wrong
    assert sum(profile["pairs"].values()) == 2 * wrong
    assert 50 < profile["runs"][ckpt]["training"] <= 100 and profile["runs"][ckpt]["nll"] > 0


def test_shift_sets_by_name(script, held_out, capsys) -> None:
    ckpt, options = held_out
    assert list(script("heldout_shift_sets").main(["--sets", "none,S4", ckpt, *options])[ckpt]) == ["none", "S4"]
    with pytest.raises(SystemExit):
        script("heldout_shift_sets").main(["--sets", "S5", ckpt, *options])
    assert "--sets: S5 not among none, S4, S8, S8b, S12" in capsys.readouterr().err


def test_scratch_nets_keep_the_parameters_and_change_the_blocks(script) -> None:
    from src.mnist.nets import CompactGapNet, count_parameters  # noqa: PLC0415

    widths = {"stem": [8, 10], "squeeze": 8, "body": [14, 18], "separable": 1}
    plain, bn_relu, silu = (
        cls(**widths) for cls in (CompactGapNet, script("scratchnets").BnReluGapNet, script("scratchnets").SiluGapNet)
    )
    assert count_parameters(bn_relu) == count_parameters(silu) == count_parameters(plain)
    kinds = [type(layer) for layer in bn_relu.features]
    assert all(kinds[i + 1] is nn.ReLU for i, kind in enumerate(kinds) if kind is nn.BatchNorm2d)
    assert [type(layer) for layer in plain.features].count(nn.ReLU) == kinds.count(nn.ReLU) == 4
    assert not any(isinstance(m, nn.ReLU) for m in silu.modules())
    assert sum(isinstance(m, nn.SiLU) for m in silu.modules()) == 4
    assert bn_relu(torch.randn(2, 1, 28, 28)).shape == silu(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_norm_no_decay_spares_norms_and_biases(script) -> None:
    from src.mnist.nets import CompactGapNet  # noqa: PLC0415

    net = CompactGapNet(stem=[4], squeeze=4, body=[6])
    make_optimizer = functools.partial(torch.optim.SGD, lr=0.1, weight_decay=1e-4)
    model = script("scratchmod").NormNoDecayClassifier(net=net, optimizer=make_optimizer)
    decayed, spared = model.configure_optimizers().param_groups
    assert decayed["weight_decay"] == 1e-4 and spared["weight_decay"] == 0.0
    assert {p.ndim for p in decayed["params"]} == {4} and {p.ndim for p in spared["params"]} == {1}
    assert len(decayed["params"]) + len(spared["params"]) == len(list(net.parameters()))
    assert model.make_optimizer is make_optimizer  # put back


@pytest.mark.parametrize("options", [[], ["--bf16", "--channels-last", "--foreach"]])
def test_profile_step(script, options) -> None:
    table = script("profile_step").main(["--threads", "1", "--steps", "2", "--warmup", "1", "--rows", "8", *options])
    assert "aten::convolution_backward" in table and "Self CPU" in table
    assert len(table.strip().splitlines()) <= 8 + 6  # the rows asked for, the header and the totals


def test_time_sgd_step(script, capsys) -> None:
    milliseconds = script("time_sgd_step").main(["--steps", "3"])
    assert set(milliseconds) == {False, True} and all(ms > 0 for ms in milliseconds.values())
    assert capsys.readouterr().out.splitlines()[1].startswith("foreach=True: ")


@needs_sweep_extras
def test_search_benchmark_times_each_storage(script, tmp_path: Path) -> None:
    """The storage measure (the search measures run whole searches: see docs/scale-out.md for their command)."""
    out = tmp_path / "bench.jsonl"
    lines = script("search_benchmark").main(["--measure", "storage", "--overhead-trials", "3", "--out", str(out)])
    assert {line["storage"] for line in lines} >= {"sqlite", "journal"}
    assert all(line["trials"] == 3 and 0 < line["ms_per_trial_median"] <= line["ms_per_trial_max"] for line in lines)
    assert [json.loads(text) for text in out.read_text().splitlines()] == lines


def test_bench_inference_times_each_runtime_beside_the_exports_figures(script, exported: Path, capsys) -> None:
    script("bench_inference").main([str(exported), "--runs", "3", "--bulk", "8", "--start-runs", "0"])
    report = json.loads(capsys.readouterr().out)
    (net,) = report["nets"]
    checked = json.loads((exported / "export.json").read_text())
    assert net["recipe"] == "record" and net["int8_top1_agreement"] == checked["int8"]["top1_agreement"]
    assert net["fp32_disagreements"] == 0 and net["fp32_accuracy"] == net["pytorch_accuracy"]
    for runtime in ("pytorch_eager_fp32", "onnxruntime_fp32", "onnxruntime_int8"):
        assert net[runtime]["batch1_ms_median"] > 0 and net[runtime]["bulk_images_per_s"] > 0
    assert report["predict_start_to_answer_s"] == {}


class Running:
    """A stand-in for the session's process: running for `polls` polls, then ended."""

    def __init__(self, polls: int) -> None:
        self.polls = polls

    def poll(self) -> int | None:
        self.polls -= 1
        return None if self.polls >= 0 else 0


def test_the_repeated_interruption_waits_for_a_job_in_training(script, tmp_path: Path) -> None:
    """`repeat` signals a session only once it has written a checkpoint that is not a job's last epoch's (the job is
    training its next epoch): not one from an earlier session, not a job's last (it is testing or done)."""
    check = script("interrupt_check")

    def write(job: str, epoch: int) -> None:
        (tmp_path / job / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": epoch}, tmp_path / job / "checkpoints" / "last.ckpt")

    write("0_kept", 0)
    since_ns = time.time_ns() + 1
    time.sleep(0.05)  # file times come from a coarser clock, a tick behind at most
    assert check.training_job(tmp_path, since_ns, Running(polls=3)) is None, "an earlier session's checkpoint"
    write("1_last", check.EPOCHS - 1)
    assert check.training_job(tmp_path, since_ns, Running(polls=3)) is None, "a job's last epoch's checkpoint"
    write("2_training", 0)
    assert check.training_job(tmp_path, since_ns, Running(polls=3)) == ("2_training", 2)
