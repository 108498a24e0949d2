"""The LightningModule: NLL loss on the net's log-probabilities, torchmetrics accuracy, optimiser and schedule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from src.core.errors import UserError
from src.core.rng import capture_rng_states, restore_rng_states
from src.mnist.classifier import checked_shifts, shift_averaged
from src.mnist.distill import Distillation
from src.mnist.nets import count_parameters

OptimizerFactory = Callable[..., torch.optim.Optimizer]
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class Diverged(UserError):
    """The training loss stopped being a number; the run stops instead of training on NaNs."""


class MNISTClassifier(pl.LightningModule):
    """Trains any net of `src.mnist.nets`; refuses one at or over the `max_params` budget before training starts.

    `optimizer` is a partial that takes the parameters; `scheduler` is `{interval, lr_scheduler}` where
    `lr_scheduler` is a partial that takes the optimiser (or null). A schedule that needs the run length
    (`total_steps: null`, as OneCycleLR) gets it from the trainer. `label_smoothing` softens the training targets
    only; validation and test report the plain NLL so every recipe's losses compare. `compile_mode` (a
    `torch.compile` mode, e.g. "default" or "reduce-overhead") compiles the net for training; the weights keep their
    names, so checkpoints load either way. `distillation` (`distill=teacher`) mixes a trained teacher's softened
    outputs into the training loss. `test_time_shifts` ([dx, dy] pixel shifts) makes evaluation average the
    net's probabilities over each image and its shifted copies (validation, test, `src.eval` and `src.predict`).
    `channels_last` stores the conv weights channels-last, so every conv, BatchNorm and pool after the first runs
    in that layout: faster for the `speedrun` net in fp32 on a CPU, slower for `dropout_steplr` and in bf16 on a
    CPU with native bf16 (docs/speed.md), hence a recipe's choice.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: Mapping[str, Any] | None = None,
        max_params: int = 20_000,
        label_smoothing: float = 0.0,
        compile_mode: str | None = None,
        distillation: Distillation | None = None,
        test_time_shifts: Sequence[Sequence[int]] = (),
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # Plain attributes, not save_hyperparameters: a checkpoint must hold tensors and plain data only (it is read
        # with weights_only=True); the run config stored beside the weights has these settings as plain values.
        self.make_optimizer = optimizer
        self.schedule = scheduler
        self.label_smoothing = label_smoothing
        if compile_mode not in COMPILE_MODES:
            modes = ", ".join(str(mode) for mode in COMPILE_MODES)
            raise UserError(f"model.compile_mode={compile_mode!r} is not one of {modes} (null: no compiling)")
        self.compile_mode = compile_mode
        self.distillation = distillation
        self.test_time_shifts = checked_shifts(test_time_shifts)
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.num_params = count_parameters(net)
        if self.num_params >= max_params:
            raise UserError(
                f"{type(net).__name__} has {self.num_params:,} parameters, at or over model.max_params={max_params:,}"
            )
        # Evaluation metrics are torchmetrics (exact over the whole set, synced under DDP). Training metrics are sums
        # on the device, handed to Lightning every `log_every_n_steps` steps (`flush_train_metrics`): a torchmetrics
        # update would validate its inputs with a host sync on every step, and a `self.log` call costs more than the
        # rest of a small net's step outside forward and backward.
        self.train_loss_sum = torch.zeros(())  # set per epoch on the training device (on_train_epoch_start)
        self.train_correct = torch.zeros((), dtype=torch.long)
        self.train_samples = 0
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)
        self.val_acc_best = MaxMetric()
        self.restored_val_acc_best: float | None = None  # from the checkpoint a resumed run continues
        self.register_buffer("nonfinite_steps", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities. In evaluation with `test_time_shifts`, the mean of the probabilities over the image
        and its shifted copies (one batch through the net); training always sees the images as they are."""
        return self.net(x) if self.training else shift_averaged(self.net, x, self.test_time_shifts)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets = batch
        log_probs = self(images)
        return F.nll_loss(log_probs, targets), log_probs.argmax(dim=1), targets

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.compile_mode:  # evaluation alone is too short to repay the compile time
            self.net.compile(mode=self.compile_mode)

    def on_fit_start(self) -> None:
        if self.distillation is not None:
            self.distillation.to(self.device, self.dtype)

    def on_train_start(self) -> None:
        # The sanity-check validation pass must not count towards the best accuracy; a resumed run's earlier epochs do.
        self.val_acc_best.reset()
        if self.restored_val_acc_best is not None:
            self.val_acc_best(torch.tensor(self.restored_val_acc_best))

    def on_train_epoch_start(self) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)
        self.train_loss_sum = torch.zeros((), device=self.device)  # float32 whatever the precision: a sum of losses
        self.train_correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.train_samples = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        log_probs = self(images)
        # cross_entropy re-normalises its input; log-probabilities are already normalised, so this is NLL + smoothing.
        loss = F.cross_entropy(log_probs, targets, label_smoothing=self.label_smoothing)
        if self.distillation is not None:
            loss = self.distillation.loss(images, log_probs, loss)
        self.train_loss_sum += loss.detach() * len(targets)
        self.train_correct += (log_probs.argmax(dim=1) == targets).sum()
        self.train_samples += len(targets)
        self.nonfinite_steps += ~torch.isfinite(loss.detach())
        if self.host_read_due(batch_idx):
            self.flush_train_metrics()
            self.stop_if_diverged(loss)
        return loss

    def host_read_due(self, batch_idx: int) -> bool:
        """Every `log_every_n_steps` steps, at each epoch's last batch (before its checkpoints are written) and on the
        run's last steps under `max_steps`: the only steps that hand values to the host."""
        trainer = self.trainer
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        last_steps = 0 < trainer.max_steps <= trainer.global_step + 1
        return (batch_idx + 1) % trainer.log_every_n_steps == 0 or last_batch or last_steps

    def flush_train_metrics(self) -> None:
        """The mean loss and accuracy since the last flush, weighted by its sample count: Lightning's epoch mean of
        these is then the exact mean over the epoch's samples (and over processes, with sync_dist)."""
        samples = self.train_samples
        self.log("train/loss", self.train_loss_sum / samples, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=samples, sync_dist=True)  # fmt: skip
        self.log("train/acc", self.train_correct / samples, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=samples, sync_dist=True)  # fmt: skip
        self.train_loss_sum.zero_()
        self.train_correct.zero_()
        self.train_samples = 0

    def stop_if_diverged(self, loss: torch.Tensor) -> None:
        """Stops on a non-finite loss: the device counts them on every step, the host reads the count here."""
        if not self.nonfinite_steps.item():
            return
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        raise Diverged(
            f"loss is {loss.item()} at epoch {self.current_epoch + 1}, step {self.global_step + 1} with lr {lr:.3g}"
        )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, preds, targets = self._step(batch)
        self.val_loss(loss, weight=len(targets))
        self.val_acc(preds, targets)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, preds, targets = self._step(batch)
        self.test_loss(loss, weight=len(targets))
        self.test_acc(preds, targets)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        return {"preds": preds}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The random streams too: a resumed run draws the same shuffles, augmentations and dropout masks as an
        uninterrupted one (exactly so with `trainer.deterministic=true`). And the best validation accuracy so far,
        which a metric keeps outside the state_dict: a resumed run's `val/acc_best` goes on from it, not from 0."""
        checkpoint["rng_states"] = capture_rng_states()
        best = self.val_acc_best.compute() if self.val_acc_best.update_called else None
        checkpoint["val_acc_best"] = None if best is None else float(best)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
        self.restored_val_acc_best = checkpoint.get("val_acc_best")

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(params=self.parameters())
        schedule = self.schedule
        if not schedule or schedule.get("lr_scheduler") is None:
            return optimizer
        make_scheduler = schedule["lr_scheduler"]
        steps = int(self.trainer.estimated_stepping_batches)
        run_length = {}
        if "total_steps" in make_scheduler.keywords and make_scheduler.keywords["total_steps"] is None:
            run_length["total_steps"] = steps
        try:
            scheduler = make_scheduler(optimizer, **run_length)
        except (ZeroDivisionError, ValueError) as error:  # e.g. a one-cycle warm-up shorter than one step
            raise UserError(
                f"{make_scheduler.func.__name__} cannot schedule a run of {steps} optimizer steps ({error}); "
                "train for more steps (trainer.max_epochs, a smaller data.batch_size) or choose another scheduler"
            ) from None
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": schedule["interval"]}}
