"""Callbacks that turn a run into what users read (one line per epoch, `summary.json`'s rows, TensorBoard figures),
and those that keep it whole: its record in every checkpoint, a search's pruning, a stop signal's clean stop."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import WeightAveraging  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from src.core.interrupt import StopRequests  # noqa: E402
from src.mnist.images import MNIST_MEAN, MNIST_STD  # noqa: E402
from src.mnist.record import RunRecord  # noqa: E402

log = logging.getLogger(__name__)


def _metric(trainer: pl.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 4)


class EpochLog(pl.Callback):
    """Prints one line per epoch and keeps the per-epoch rows (accuracies in %) that `summary.json` reports."""

    def __init__(self, job_start: float) -> None:
        self.rows: list[dict[str, Any]] = []
        self._job_start = job_start
        self._epoch_start = 0.0
        self._validated_epoch = -1

    def state_dict(self) -> dict[str, Any]:
        """Saved in each checkpoint, so a resumed run's summary.json has every epoch, not only the resumed ones."""
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # Lightning keeps the last logged value of each metric: in an epoch that did not validate
        # (trainer.check_val_every_n_epoch > 1) `val/` would still hold an earlier epoch's figures.
        validated = self._validated_epoch == trainer.current_epoch
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": _metric(trainer, "train/loss"),
            "train_acc": _percent(_metric(trainer, "train/acc")),
            "val_loss": _metric(trainer, "val/loss") if validated else None,
            "val_acc": _percent(_metric(trainer, "val/acc")) if validated else None,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],  # the schedule steps after this hook
            "seconds": round(time.perf_counter() - self._epoch_start, 2),
            "since_start": round(time.perf_counter() - self._job_start, 2),
        }
        self.rows.append(row)
        if not trainer.is_global_zero:
            return
        log.info(
            "epoch %d/%d | train loss %s acc %s | val loss %s acc %s | lr %.3g | %.1fs",
            row["epoch"], trainer.max_epochs, _shown(row["train_loss"], "{:.4f}"), _shown(row["train_acc"], "{:.2f}%"),
            _shown(row["val_loss"], "{:.4f}"), _shown(row["val_acc"], "{:.2f}%"), row["lr"], row["seconds"],
        )  # fmt: skip


class TrialReport(pl.Callback):
    """A search's run reports each epoch's held-out accuracy (`EpochLog`'s row, in %) to its Optuna trial and stops
    after that epoch when the trial's pruner judges it hopeless (`pruned_at`: the epoch)."""

    def __init__(self, trial: Any, epoch_log: EpochLog) -> None:
        self.trial = trial
        self.epoch_log = epoch_log
        self.pruned_at: int | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = self.epoch_log.rows[-1] if self.epoch_log.rows else None
        if trainer.sanity_checking or row is None or row["val_acc"] is None or not trainer.is_global_zero:
            return
        self.trial.report(row["val_acc"], row["epoch"])
        if self.trial.should_prune():
            self.pruned_at = row["epoch"]
            trainer.should_stop = True
            log.info(
                "pruned at epoch %d: the search's pruner judges val acc %.2f%% hopeless", row["epoch"], row["val_acc"]
            )


def warmup_decay(decay: float, updates: torch.Tensor) -> torch.Tensor:
    """(1 + n) / (10 + n) after n updates, capped at `decay`: the one place the warm-up schedule is written."""
    return torch.clamp((1 + updates) / (10 + updates), max=decay)


@torch.no_grad()
def warmup_ema_update(
    decay: float, average: torch.Tensor, current: torch.Tensor, updates: torch.Tensor
) -> torch.Tensor:
    step_decay = warmup_decay(decay, updates)
    return step_decay * average + (1 - step_decay) * current


@torch.no_grad()
def warmup_ema_update_all(
    decay: float, averages: list[torch.Tensor], currents: list[torch.Tensor], updates: torch.Tensor
) -> None:
    """`warmup_ema_update` on a whole group of same-dtype tensors in a few multi-tensor kernels, instead of four small
    ops per tensor on every step (the same arithmetic, so the same numbers). Integer buffers (BatchNorm's batch
    counts) take the per-tensor path."""
    if not averages[0].is_floating_point():
        for average, current in zip(averages, currents, strict=True):
            average.copy_(warmup_ema_update(decay, average, current, updates))
        return
    step_decay = warmup_decay(decay, updates)
    torch._foreach_mul_(averages, step_decay)
    torch._foreach_add_(averages, torch._foreach_mul(currents, 1 - step_decay))


class WarmupEMA(WeightAveraging):
    """An exponential moving average of the weights and BatchNorm statistics, used for validation, test and the saved
    model. After n updates its decay is (1 + n) / (10 + n), capped at `decay`: with a fixed 0.999 from the first step,
    the average still held ~45 % of the untrained first-step weights after an epoch, and validation accuracy sat near
    10 % for the first epochs. Once the cap is reached (n = 8,991 for 0.999) it is the plain EMA."""

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__(multi_avg_fn=partial(warmup_ema_update_all, decay))


def _shown(value: float | None, template: str) -> str:
    """Metrics are absent when a loop is switched off (e.g. `trainer.limit_val_batches=0`)."""
    return "n/a" if value is None else template.format(value)


def _denormalise(images: torch.Tensor) -> torch.Tensor:
    return (images * MNIST_STD + MNIST_MEAN).clamp(0, 1)


class TensorBoardFigures(pl.Callback):
    """Logs what a scalar cannot show: one augmented training batch, the test confusion matrix, misclassified digits."""

    def __init__(self, max_misclassified: int = 64) -> None:
        self.max_misclassified = max_misclassified
        self._confusion = torch.zeros(10, 10, dtype=torch.long)
        self._wrong: list[tuple[torch.Tensor, int, int]] = []

    @staticmethod
    def _tensorboard(trainer: pl.Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        tensorboard = self._tensorboard(trainer)
        if tensorboard is None or trainer.global_step != 0 or batch_idx != 0:
            return
        grid = make_grid(_denormalise(batch[0][:64].detach().cpu()), nrow=8, pad_value=0.5)
        tensorboard.experiment.add_image("train/augmented_batch", grid, global_step=0)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._confusion.zero_()
        self._wrong.clear()

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        images, targets = (t.detach().cpu() for t in batch)
        preds = outputs["preds"].detach().cpu()
        self._confusion += torch.bincount(targets * 10 + preds, minlength=100).reshape(10, 10)
        for index in (preds != targets).nonzero().flatten().tolist():
            if len(self._wrong) < self.max_misclassified:
                self._wrong.append((images[index, 0], int(preds[index]), int(targets[index])))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tensorboard = self._tensorboard(trainer)
        if tensorboard is None:
            return
        step = trainer.global_step
        tensorboard.experiment.add_figure("test/confusion_matrix", self._confusion_figure(), global_step=step)
        if self._wrong:
            tensorboard.experiment.add_figure("test/misclassified", self._misclassified_figure(), global_step=step)

    def _confusion_figure(self) -> plt.Figure:
        figure, axes = plt.subplots(figsize=(6, 6))
        axes.imshow(self._confusion.numpy(), cmap="Blues")
        for true in range(10):
            for pred in range(10):
                axes.text(pred, true, int(self._confusion[true, pred]), ha="center", va="center", fontsize=7)
        axes.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
        axes.set_title("test set confusion matrix")
        figure.tight_layout()
        return figure

    def _misclassified_figure(self) -> plt.Figure:
        columns = 8
        rows = (len(self._wrong) + columns - 1) // columns
        figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.4), squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for axis, (image, pred, true) in zip(axes.flat, self._wrong, strict=False):
            axis.imshow(_denormalise(image).numpy(), cmap="gray")
            axis.set_title(f"pred {pred} / true {true}", fontsize=7)
        figure.tight_layout()
        return figure


class RecordInCheckpoint(pl.Callback):
    """Writes the run's record into every checkpoint (its form is `src.mnist.record`'s)."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.record.write_into(checkpoint)


class StopWhenRequested(pl.Callback):
    """A stop signal that came after the run began taking them (`StopRequests`) but before `fit` or `test` installed
    Lightning's SIGTERM handler was only recorded: it is passed to that handler as the stage starts (the handler is in
    place by then), so that the loops stop after the first batch, as for a signal during training (same checkpoint,
    summary and exit status)."""

    def __init__(self, stop: StopRequests) -> None:
        self.stop = stop

    def on_sanity_check_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._pass_on(trainer)

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._pass_on(trainer)

    def on_test_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._pass_on(trainer)

    def _pass_on(self, trainer: pl.Trainer) -> None:
        if self.stop.signum is not None and not trainer.received_sigterm:
            self.stop.pass_on()
