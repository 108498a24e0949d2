"""The trackers `conf/logger/` builds beside TensorBoard: Lightning's CSV and MLflow loggers, which take the run's
final figures as TensorBoard's does (`log_hyperparams(params, metrics)`), the MLflow one with a local SQLite store by
default and a one-line error for a store it cannot open or reach."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers import MLFlowLogger as LightningMLFlowLogger

from src.core.errors import UserError, reason_of
from src.core.urls import shown

SQLITE = "sqlite:///"


class FinalMetrics:
    """`log_hyperparams(params, metrics)` as TensorBoardLogger takes it: the params, then the metrics (the run's final
    figures, `hparams/test_acc`, ...) at the last step logged."""

    _last_step: int | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is not None:
            self._last_step = step
        super().log_metrics(metrics, step)  # type: ignore[misc]

    def log_hyperparams(self, params: dict[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        super().log_hyperparams(params)  # type: ignore[misc]
        if metrics:
            self.log_metrics(metrics, self._last_step)


class CSVLogger(FinalMetrics, LightningCSVLogger):
    """`<save_dir>/<name>/<version>/`: metrics.csv (a row per logged step) and hparams.yaml."""


def local_tracking_uri(uri: str) -> str:
    """A SQLite store's path made absolute (against the launch dir) and its folder created; other URIs unchanged."""
    if not uri.startswith(SQLITE):
        return uri
    path = Path(uri.removeprefix(SQLITE)).expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"logger.tracking_uri={shown(uri)}: cannot create {path.parent} ({error.strerror})") from None
    return f"{SQLITE}{path}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """A tracking server that does not answer is one line now, not minutes of MLflow's retries and a traceback."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(
            f"logger.tracking_uri={shown(uri)}: no tracking server answers at {parts.hostname}:{port} ({reason})"
        ) from None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Processes that share a SQLite store (a joblib multirun's jobs) create its tables, the experiment and their runs
    one at a time: created at once, the same table or experiment would be created twice."""
    if not uri.startswith(SQLITE):
        yield
        return
    with open(f"{uri.removeprefix(SQLITE)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class MLFlowLogger(FinalMetrics, LightningMLFlowLogger):
    """One MLflow run per run dir (named by the dir, its path in the `run_dir` tag) in the experiment `experiment_name`,
    created here, so that a store that cannot be opened stops the run before training, in one line. A new experiment
    in a SQLite store keeps its artifacts beside the file (`mlartifacts/<experiment>`), not in the launch dir."""

    def __init__(
        self,
        run_dir: str,
        tracking_uri: str,
        experiment_name: str,
        tags: dict[str, Any] | None = None,
        artifact_location: str | None = None,
        **kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise UserError("logger=mlflow needs MLflow: install the tracking extra (make install, or pip install -e "
                            "'.[tracking]')")  # fmt: skip
        uri = local_tracking_uri(tracking_uri)
        check_reachable(uri)
        from mlflow.exceptions import MlflowException  # noqa: PLC0415 - MLflow's import is paid by its runs only
        from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

        if artifact_location is None and uri.startswith(SQLITE):
            artifact_location = str(Path(uri.removeprefix(SQLITE)).parent / "mlartifacts" / experiment_name)
        with store_lock(uri):
            try:
                super().__init__(
                    tracking_uri=uri, experiment_name=experiment_name, run_name=Path(run_dir).name,
                    tags={**(tags or {}), "run_dir": run_dir}, artifact_location=artifact_location, **kwargs,
                )  # fmt: skip
                _ = self.run_id  # the experiment and the run
            except (MlflowException, SQLAlchemyError, OSError, ValueError) as error:
                reason = reason_of(error)
                raise UserError(f"logger.tracking_uri={shown(tracking_uri)} cannot be used: {reason}") from None
