"""The real CLI in a subprocess on tiny IDX files: what a run leaves behind, multiruns, and the one-line errors."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.core.errors import UserError
from src.mnist.data import MNISTDataModule
from src.mnist.schema import validate
from tests.conftest import TINY_RUN, assert_one_line_error, compose_train, run_cli

SUMMARY_KEYS = {
    "recipe", "params", "seed", "epochs", "test_acc", "test_loss", "val_acc", "best_val_acc", "best_epoch",
    "first_epoch_at_or_above_99_4", "seconds_to_99_4", "train_seconds", "test_seconds", "per_epoch", "resumed_from",
    "device",
}  # fmt: skip
EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "since_start"}


def read_tensorboard(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    return events.Reload()


@pytest.fixture(scope="module")
def tiny_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("run") / "dropout_steplr"
    result = run_cli("model=dropout_steplr", *TINY_RUN, f"hydra.run.dir={run_dir}", data_dir=tiny_mnist)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir, result.stdout + result.stderr


def test_run_writes_a_complete_summary(tiny_run: tuple[Path, str]) -> None:
    run_dir, _ = tiny_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert (summary["recipe"], summary["params"], summary["seed"], summary["epochs"]) == ("dropout_steplr", 9320, 1, 2)
    assert [row["epoch"] for row in summary["per_epoch"]] == [1, 2]
    assert all(set(row) == EPOCH_KEYS for row in summary["per_epoch"])
    assert summary["per_epoch"][0]["lr"] == 0.01
    assert 0 <= summary["test_acc"] <= 100 and summary["test_loss"] > 0
    # Default evaluation is on the test set, so the final epoch's val accuracy is the final weights' test accuracy.
    assert summary["test_acc"] == pytest.approx(summary["per_epoch"][-1]["val_acc"], abs=1e-3)
    assert summary["best_val_acc"] == max(row["val_acc"] for row in summary["per_epoch"])


def test_run_keeps_config_checkpoints_and_console_lines(tiny_run: tuple[Path, str]) -> None:
    run_dir, output = tiny_run
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-epoch*-val_acc*.ckpt"))) == 1
    assert "DropoutGapNet has 9,320 parameters" in output
    assert "epoch 1/2 | train loss" in output and "epoch 2/2 | train loss" in output


def test_tensorboard_events_hold_metrics_and_figures(tiny_run: tuple[Path, str]) -> None:
    events = read_tensorboard(tiny_run[0])
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "train/lr", "test/acc"} <= scalars
    assert [event.step for event in events.Scalars("val/acc")] and len(events.Scalars("val/acc")) == 2
    assert {"train/augmented_batch", "test/confusion_matrix", "test/misclassified"} <= set(events.Tags()["images"])


def test_onecycle_schedule_gets_the_run_length_on_the_torchvision_pipeline(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(
        "scheduler=onecycle", "data.pipeline=torchvision", "logger=none", *TINY_RUN, f"hydra.run.dir={tmp_path}",
        data_dir=tiny_mnist,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lrs = [row["lr"] for row in json.loads((tmp_path / "summary.json").read_text())["per_epoch"]]
    assert lrs[1] < lrs[0] < 0.01  # past the peak at 25 %, then annealed towards zero at the end


def test_multirun_leaves_one_dir_per_job(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(
        "-m", "model=baseline,sequential_avgpool", *TINY_RUN, "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path}",
        data_dir=tiny_mnist,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    job_dirs = sorted(path.name for path in tmp_path.iterdir() if path.is_dir() and path.name[0].isdigit())
    assert job_dirs == ["0_baseline_seed1", "1_sequential_avgpool_seed1"]
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in job_dirs]
    assert [summary["recipe"] for summary in summaries] == ["baseline", "sequential_avgpool"]
    first_job_end = summaries[0]["per_epoch"][-1]["since_start"]  # includes Python and torch start-up
    assert summaries[1]["per_epoch"][0]["since_start"] < first_job_end, "job 2's clock must not include job 1"
    table = (tmp_path / "results.md").read_text()  # written by the sweep-end report
    assert "| baseline | 9,186 | 1 | 1 |" in table and "| sequential_avgpool | 12,234 | 1 | 1 |" in table


def test_absent_data_offline_stops_with_one_line(tmp_path: Path) -> None:
    offline = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    empty_root = tmp_path / "no_mnist_here"
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", data_dir=empty_root, env=offline)
    assert_one_line_error(result, f"not under {empty_root}/MNIST/raw", "DATA_DIR or data.root", "download failed")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_over_budget_net_stops_before_training(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli("model=baseline", "model.max_params=9000", f"hydra.run.dir={tmp_path}", data_dir=tiny_mnist)
    assert_one_line_error(result, "BatchNormGapNet has 9,186 parameters", "model.max_params=9,000")
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_group_option_is_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli("-m", "model=baseline,resnet50", f"hydra.sweep.dir={tmp_path}", data_dir=tiny_mnist)
    assert_one_line_error(
        result,
        "model=resnet50 is not an option; valid: augmented, baseline, dropout_steplr, fast, record, "
        "sequential_avgpool, tiny",
    )
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


BAD_VALUES = [
    ("optimizer.lr=0", "optimizer.lr=0.0 must be > 0"),
    ("optimizer.lr=fast", "optimizer.lr='fast' is not a valid float"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be >= 1"),
    ("data.batch_size=0", "data.batch_size=0 must be >= 1"),
    ("model.net.dropout=1.0", "model.net.dropout=1.0 must be in [0, 1)"),
    ("model.net.dropout=-0.1", "model.net.dropout=-0.1 must be in [0, 1)"),
    ("model.label_smoothing=1", "model.label_smoothing=1.0 must be in [0, 1)"),
    ("model=record callbacks.ema.decay=1", "callbacks.ema.decay=1.0 must be in (0, 1)"),
    ("optimized_metric=test_loss", "optimized_metric='test_loss' is not one of test_acc, val_acc, best_val_acc"),
    ("test=false", "optimized_metric='test_acc' needs test=true; with test=false use val_acc or best_val_acc"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_schema_names_each_bad_value_and_what_is_valid(override: str, message: str) -> None:
    with pytest.raises(UserError) as raised:
        validate(compose_train(*override.split()))
    assert str(raised.value) == message


def test_bad_value_stops_the_cli_in_one_line_before_anything_is_built(tiny_mnist: Path, tmp_path: Path) -> None:
    override, message = BAD_VALUES[0]
    result = run_cli(override, f"hydra.run.dir={tmp_path / 'run'}", data_dir=tiny_mnist)
    assert_one_line_error(result, message)
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "run").exists(), "nothing half-written"


def broken_copy(tiny_mnist: Path, tmp_path: Path, name: str, content: bytes) -> Path:
    root = tmp_path / "broken"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (tiny_mnist / "MNIST" / "raw").iterdir():
        (raw / path.name).write_bytes(content if path.name == name else path.read_bytes())
    return root


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (
            lambda data: b"\x00\x00\x08\x01" + data[4:],
            "is not an MNIST IDX file: magic number 0x00000801, expected 0x00000803",
        ),
        (lambda data: data[:-100], "is truncated or corrupt"),
        (lambda data: b"", "is not an MNIST IDX file: magic number none (file too short)"),
    ],
)
def test_corrupt_idx_files_are_named_in_one_line(tiny_mnist: Path, tmp_path: Path, mangle, message: str) -> None:
    name = "train-images-idx3-ubyte"
    root = broken_copy(tiny_mnist, tmp_path, name, mangle((tiny_mnist / "MNIST" / "raw" / name).read_bytes()))
    with pytest.raises(UserError) as raised:
        MNISTDataModule(root=str(root), download=False).prepare_data()
    assert str(raised.value).startswith(f"{root.resolve()}/MNIST/raw/{name} ")
    assert message in str(raised.value)


def test_corrupt_idx_file_stops_the_cli_in_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    name = "t10k-labels-idx1-ubyte"
    root = broken_copy(tiny_mnist, tmp_path, name, (tiny_mnist / "MNIST" / "raw" / name).read_bytes()[:-5])
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", data_dir=root)
    assert_one_line_error(result, f"{root}/MNIST/raw/{name} is truncated or corrupt")
    assert not (tmp_path / "run").exists()


def test_data_root_that_is_a_file_stops_in_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "mnist.zip"
    not_a_dir.write_bytes(b"PK")
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", data_dir=not_a_dir)
    assert_one_line_error(result, f"data.root={not_a_dir} is a file; it must be a folder holding MNIST/raw/")


def test_unwritable_output_dir_stops_in_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "outputs"  # a file where the runs folder should go: unwritable even for root
    blocker.write_text("")
    result = run_cli(f"runs_dir={blocker / 'runs'}", data_dir=tiny_mnist)
    assert_one_line_error(result, f"cannot write the run's output dir under {blocker / 'runs'}: {blocker} is a file")


def test_one_cycle_over_too_few_steps_stops_in_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli("model=tiny", *TINY_RUN, "data.batch_size=80", "trainer.max_epochs=1", "logger=none",
                     f"hydra.run.dir={tmp_path / 'run'}", data_dir=tiny_mnist)  # fmt: skip
    assert_one_line_error(result, "OneCycleLR cannot schedule a run of 4 optimizer steps", "trainer.max_epochs")
    assert not (tmp_path / "run").exists()
