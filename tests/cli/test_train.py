"""What a run leaves behind (the shared tiny run), multiruns, and the one-line errors of `python -m src.train`.

The errors run the real entry point inside this process (`cli_in_process`); one subprocess test checks what only a
new interpreter shows: the exit status and that stderr is that one line."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import src
from tests.helpers import (
    BAD_VALUES,
    REPO,
    TINY_RUN,
    TINY_TEST,
    broken_copy,
    cli_in_process,
    compose_train,
    recipe_params,
    run_cli,
    train_in_process,
)

SUMMARY_KEYS = {
    "recipe", "params", "seed", "epochs", "test_acc", "test_loss", "val_acc", "best_val_acc", "best_epoch",
    "first_epoch_at_or_above_99_4", "seconds_to_99_4", "train_seconds", "test_seconds", "per_epoch", "resumed_from",
    "device",
}  # fmt: skip
EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "since_start"}
# The tiny digits are easy: record's net reaches this in the shared run's 2 × 40 steps (measured: 100 % of the 160
# test images, 73.75 % after epoch 1); an untrained or broken net sits near 10 %.
TINY_ACC_FLOOR = 90.0


def read_tensorboard(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    return events.Reload()


def one_cycle_lrs(peak: float, total_steps: int, at_steps: list[int]) -> list[float]:
    """What torch's OneCycleLR (conf/scheduler/onecycle.yaml's settings) gives after each count of steps."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak, momentum=0.9)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total_steps, pct_start=0.25)
    lrs = []
    for step in range(1, max(at_steps) + 1):
        optimizer.step()
        schedule.step()
        if step in at_steps:
            lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_run_writes_a_complete_summary_of_a_run_that_learned(trained_run: Path) -> None:
    summary = json.loads((trained_run / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS  # the provenance keys beside them: tests/core/test_provenance.py
    params = recipe_params("record")
    assert (summary["recipe"], summary["params"], summary["seed"], summary["epochs"]) == ("record", params, 1, 2)
    rows = summary["per_epoch"]
    assert [row["epoch"] for row in rows] == [1, 2] and all(set(row) == EPOCH_KEYS for row in rows)
    # The one-cycle schedule got the run's length: 320 images / batch 8 = 40 steps per epoch, 80 in all.
    assert [row["lr"] for row in rows] == pytest.approx(one_cycle_lrs(0.05, 80, [40, 80]), rel=1e-9)
    assert summary["test_acc"] >= TINY_ACC_FLOOR, summary
    assert round(summary["test_acc"] * TINY_TEST / 100, 6).is_integer()  # a count of the 160 test images
    # Evaluation runs on the test set by default, so the final epoch's val accuracy is the final weights' test one.
    assert summary["test_acc"] == rows[-1]["val_acc"] == summary["val_acc"]
    assert 0 < summary["test_loss"] < rows[0]["val_loss"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["best_val_acc"] == max(row["val_acc"] for row in rows)
    assert rows[summary["best_epoch"] - 1]["val_acc"] == summary["best_val_acc"]


def test_run_keeps_its_checkpoints_and_prints_its_lines(trained_run: Path) -> None:
    summary = json.loads((trained_run / "summary.json").read_text())
    assert torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # 0-based: epoch 2
    (best,) = (trained_run / "checkpoints").glob("best-*.ckpt")
    epoch, val_acc = re.fullmatch(r"best-epoch(\d+)-val_acc([\d.]+)\.ckpt", best.name).groups()
    assert int(epoch) + 1 == summary["best_epoch"]
    assert float(val_acc) == pytest.approx(summary["best_val_acc"] / 100, abs=1e-4)
    log = (trained_run / "train.log").read_text()
    widths = compose_train("model=record").model.net  # conf/model/record.yaml's
    net = "CompactGapNet(stem={stem}, squeeze={squeeze}, body={body}, separable={separable})".format(**widths)
    assert f"recipe record: {net} has {recipe_params('record'):,} parameters" in log
    assert summary["net"] == net
    assert "epoch 1/2 | train loss" in log and "epoch 2/2 | train loss" in log
    assert f"test acc {summary['test_acc']:.2f}% (EMA weights)" in log


def test_tensorboard_events_hold_metrics_and_figures(trained_run: Path) -> None:
    events = read_tensorboard(trained_run)
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "train/lr", "test/acc"} <= scalars
    summary = json.loads((trained_run / "summary.json").read_text())
    val_acc = [event.value for event in events.Scalars("val/acc")]
    assert [round(100 * value, 4) for value in val_acc] == [row["val_acc"] for row in summary["per_epoch"]]
    assert round(100 * events.Scalars("test/acc")[-1].value, 4) == summary["test_acc"]
    assert {"train/augmented_batch", "test/confusion_matrix"} <= set(events.Tags()["images"])
    # The grid of misclassified digits is there exactly when some were (its content: tests/mnist/test_callbacks.py).
    assert ("test/misclassified" in events.Tags()["images"]) == (summary["test_acc"] < 100)


def test_a_held_out_run_without_test_logs_its_final_figures_and_eval_scores_it_again_held_out(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """test=false (how settings are chosen): TensorBoard's hparams get the validation figures, and no test figure.
    `src.eval held_out=true` finds the same held-out images from the checkpoint alone and gives the same figure."""
    overrides = ("model=tiny", *TINY_RUN, "trainer.max_epochs=1", "data.val_split=64", "test=false",
                 "data.split_seed=5")  # fmt: skip
    run_dir = tmp_path / "run"
    summary = train_in_process(*overrides, "optimized_metric=val_acc", run_dir=run_dir, data_dir=tiny_mnist)
    assert summary["test_acc"] is None and summary["val_acc"] is not None
    scalars = set(read_tensorboard(run_dir).Tags()["scalars"])
    assert {"hparams/val_acc", "hparams/best_val_acc"} <= scalars and "hparams/test_acc" not in scalars

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    error = cli_in_process("src.eval", f"ckpt_path={ckpt}", "held_out=true", f"hydra.run.dir={tmp_path / 'eval'}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error is None, error
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert (evaluated["val_split"], evaluated["split_seed"], evaluated["val_acc"]) == (64, 5, summary["val_acc"])
    assert "test_acc" not in evaluated


def test_multirun_leaves_one_dir_per_job_and_the_seed_table(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a new `python -m src.train -m` process that started 10 s ago (this worker has run other jobs already).
    monkeypatch.setattr(src, "_jobs_started", 0)
    monkeypatch.setattr(src, "PROCESS_START", time.perf_counter() - 10)
    error = cli_in_process(
        "src.train", "-m", "model=baseline,sequential_avgpool", *TINY_RUN, "trainer.max_epochs=1", "logger=none",
        f"hydra.sweep.dir={tmp_path}", data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert error is None
    job_dirs = sorted(path.name for path in tmp_path.iterdir() if path.is_dir() and path.name[0].isdigit())
    assert job_dirs == ["0_baseline_seed1", "1_sequential_avgpool_seed1"]
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in job_dirs]
    assert [summary["recipe"] for summary in summaries] == ["baseline", "sequential_avgpool"]
    assert summaries[0]["per_epoch"][-1]["since_start"] >= 10, "the first job counts the process's start-up"
    assert summaries[1]["per_epoch"][0]["since_start"] < 10, "job 2's clock must not include the start-up or job 1"
    table = (tmp_path / "results.md").read_text()  # written by the sweep-end report
    assert f"| baseline | {recipe_params('baseline'):,} | 1 | 1 |" in table
    assert f"| sequential_avgpool | {recipe_params('sequential_avgpool'):,} | 1 | 1 |" in table


@pytest.mark.slow
def test_bad_value_stops_the_cli_in_one_line_before_anything_is_built(tiny_mnist: Path, tmp_path: Path) -> None:
    """The command-line contract of every `error:` below: exit status 1, stderr that one line, no run dir left."""
    override, message = BAD_VALUES[0]
    result = run_cli(override, f"hydra.run.dir={tmp_path / 'run'}", data_dir=tiny_mnist)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {message}"], result.stderr[-2000:]
    assert not (tmp_path / "run").exists(), "nothing half-written"


def test_over_budget_net_stops_before_training(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    error = cli_in_process("src.train", "model=baseline", "model.max_params=9000", f"hydra.run.dir={tmp_path / 'run'}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    params = recipe_params("baseline")
    assert error == f"error: BatchNormGapNet has {params:,} parameters, at or over model.max_params=9,000"
    assert not (tmp_path / "run").exists()


def test_unknown_group_option_is_one_line(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    error = cli_in_process("src.train", "-m", "model=baseline,resnet50", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    recipes = ", ".join(sorted(path.stem for path in (REPO / "conf" / "model").glob("*.yaml")))
    assert recipes.startswith("augmented, baseline, dropout_steplr, fast, record, ")
    assert error == f"error: model=resnet50 is not an option; valid: {recipes}"
    assert not (tmp_path / "sweep").exists()


def test_absent_data_offline_stops_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    empty_root = tmp_path / "no_mnist_here"
    error = cli_in_process("src.train", f"hydra.run.dir={tmp_path / 'run'}", data_dir=empty_root,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error is not None and error.startswith("error: ")
    for fragment in (f"not under {empty_root}/MNIST/raw", "DATA_DIR or data.root", "download failed"):
        assert fragment in error
    assert not (tmp_path / "run").exists()


def test_corrupt_idx_file_stops_the_cli_in_one_line(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    name = "t10k-labels-idx1-ubyte"
    root = broken_copy(tiny_mnist, tmp_path, name, (tiny_mnist / "MNIST" / "raw" / name).read_bytes()[:-5])
    error = cli_in_process("src.train", f"hydra.run.dir={tmp_path / 'run'}", data_dir=root, monkeypatch=monkeypatch)
    assert error is not None and error.startswith(f"error: {root}/MNIST/raw/{name} is truncated or corrupt")
    assert not (tmp_path / "run").exists()


def test_data_root_that_is_a_file_stops_in_one_line(tmp_path: Path, monkeypatch) -> None:
    not_a_dir = tmp_path / "mnist.zip"
    not_a_dir.write_bytes(b"PK")
    error = cli_in_process("src.train", f"hydra.run.dir={tmp_path / 'run'}", data_dir=not_a_dir,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error == f"error: data.root={not_a_dir} is a file; it must be a folder holding MNIST/raw/"
    assert not (tmp_path / "run").exists()


def test_unwritable_output_dir_stops_in_one_line(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "outputs"  # a file where the runs folder should go: unwritable even for root
    blocker.write_text("")
    error = cli_in_process("src.train", f"runs_dir={blocker / 'runs'}", data_dir=tiny_mnist, monkeypatch=monkeypatch)
    assert error == f"error: cannot write the run's output dir under {blocker / 'runs'}: {blocker} is a file"


def test_one_cycle_over_too_few_steps_stops_in_one_line(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    error = cli_in_process(
        "src.train", "model=tiny", *TINY_RUN, "data.batch_size=80", "trainer.max_epochs=1", "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}", data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert error is not None and error.startswith("error: OneCycleLR cannot schedule a run of 4 optimizer steps")
    assert "trainer.max_epochs" in error
    assert not (tmp_path / "run").exists()


def test_cfg_job_prints_the_composed_config(
    tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hydra's flag, through the entry point's own argument handling (in this process: it starts nothing)."""
    assert cli_in_process("src.train", "model=dropout_steplr", "--cfg", "job", data_dir=tiny_mnist,
                          monkeypatch=monkeypatch) is None  # fmt: skip
    printed = capsys.readouterr().out
    assert "recipe: dropout_steplr" in printed
    assert "_target_: src.mnist.nets.DropoutGapNet" in printed
    assert "hydra" not in [line.split(":")[0] for line in printed.splitlines()], "the job's config only"


@pytest.mark.parametrize("continue_it", ["resume=true", "ckpt_path=any.ckpt"])
def test_continuing_a_run_inside_a_multirun_is_one_line(
    continue_it: str, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A continued run writes into its own dir, which a sweep's job dirs cannot be: refused before anything is built."""
    error = cli_in_process("src.train", "-m", continue_it, *TINY_RUN, f"hydra.sweep.dir={tmp_path}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        "error: 1 of 1 jobs failed: 0_dropout_steplr_seed1 (error: resume=true and ckpt_path continue one run; run "
        "them without -m (a multirun continues when run again with its hydra.sweep.dir=...))"
    )
    assert not (tmp_path / "0_dropout_steplr_seed1" / "checkpoints").exists()
