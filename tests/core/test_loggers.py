"""`logger=csv` and `logger=mlflow`: a tiny 2-epoch run's params, per-epoch metrics and final figures read back from
metrics.csv and through MLflow's client; the TensorBoard-only figures skipped; a store that cannot be used: one line."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest
import yaml

from src.core.cli import module_installed
from src.core.errors import UserError
from src.core.loggers import MLFlowLogger, local_tracking_uri
from tests.helpers import TINY_RUN, cli_in_process, compose_train, train_in_process

needs_mlflow = pytest.mark.skipif(
    not module_installed("mlflow"), reason="MLflow is not installed: pip install -e '.[tracking]'"
)
RUN = ("model=baseline", *TINY_RUN)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_per_epoch(values: list[float], summary: dict, key: str) -> None:
    """Per-epoch fractions as summary.json's rows have them in %."""
    assert [round(100 * value, 4) for value in values] == [row[key] for row in summary["per_epoch"]]


def test_csv_logger_holds_params_epochs_and_final_figures(tiny_mnist: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    summary = train_in_process(*RUN, "logger=csv", run_dir=run_dir, data_dir=tiny_mnist)
    with open(run_dir / "csv" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    val = [float(row["val/acc"]) for row in rows if row["val/acc"]]
    train = [float(row["train/acc"]) for row in rows if row["train/acc"]]
    assert len(val) == len(train) == 2
    assert_per_epoch(val, summary, "val_acc")
    assert_per_epoch(train, summary, "train_acc")
    final = [row for row in rows if row["hparams/test_acc"]]
    assert len(final) == 1 and float(final[0]["hparams/test_acc"]) == summary["test_acc"]
    assert float(next(row["test/acc"] for row in rows if row["test/acc"])) * 100 == pytest.approx(summary["test_acc"])
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["model"] == "baseline" and hparams["logger"] == "csv" and hparams["seed"] == 1
    assert (hparams["params"], hparams["epochs"], hparams["batch_size"]) == (summary["params"], 2, 32)
    # the default callbacks' TensorBoard figures find no TensorBoard logger and skip
    assert not (run_dir / "tensorboard").exists()
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 2


@needs_mlflow
def test_mlflow_logger_run_reads_back_through_the_client(tiny_mnist: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - MLflow's import is paid by this test only

    uri = f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    summary = train_in_process(
        *RUN, "logger=mlflow", f"logger.tracking_uri={uri}", run_dir=run_dir, data_dir=tiny_mnist
    )
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("baseline")
    assert experiment is not None
    assert experiment.artifact_location == str(tmp_path / "tracking" / "mlartifacts" / "baseline")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    params = run.data.params
    assert (params["model"], params["logger"], params["seed"], params["lr"]) == ("baseline", "mlflow", "1", "0.01")
    assert (int(params["params"]), int(params["epochs"])) == (summary["params"], 2)
    for metric, key in (("val/acc", "val_acc"), ("train/acc", "train_acc")):
        history = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda point: point.step)
        assert len({point.step for point in history}) == 2
        assert_per_epoch([point.value for point in history], summary, key)
    assert run.data.metrics["hparams/test_acc"] == summary["test_acc"]
    assert run.data.metrics["hparams/val_acc"] == summary["val_acc"]


def test_mlflow_store_defaults_to_outputs_and_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_train("logger=mlflow", "model=baseline")
    assert cfg.logger.tracking_uri == "sqlite:///outputs/mlflow.db"
    assert cfg.logger.experiment_name == "baseline"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert compose_train("logger=mlflow").logger.tracking_uri == "http://tracking.example:5000"


def test_a_relative_sqlite_store_is_taken_from_the_launch_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert local_tracking_uri("sqlite:///outputs/mlflow.db") == f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    assert (tmp_path / "outputs").is_dir()
    assert local_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert local_tracking_uri("http://host:5000") == "http://host:5000"


def test_mlflow_missing_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("src.core.loggers.importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"logger=mlflow needs MLflow: install the tracking extra"):
        MLFlowLogger(run_dir="r", tracking_uri="sqlite:///m.db", experiment_name="x")


@needs_mlflow
def test_unreachable_tracking_server_is_one_line_before_training(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URI as the line shows it has its password hidden."""
    port = free_port()
    uri, run_dir = f"http://me:secret@127.0.0.1:{port}", tmp_path / "run"
    error = cli_in_process(
        "src.train", *RUN, "logger=mlflow", f"logger.tracking_uri={uri}", f"hydra.run.dir={run_dir}",
        data_dir=tiny_mnist, monkeypatch=monkeypatch,
    )  # fmt: skip
    assert error is not None and "\n" not in error
    shown = f"http://me:***@127.0.0.1:{port}"
    assert error.startswith(f"error: logger.tracking_uri={shown}: no tracking server answers at 127.0.0.1:{port} (")
    assert not (run_dir / "checkpoints").exists()
