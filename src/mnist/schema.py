"""The values every MNIST run must get right, checked before data, model or trainer are built, so that a mistyped
value is one line instead of a traceback from deep inside torch."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from src.core.config import check_all_set
from src.core.errors import UserError


@dataclass
class RunSchema:
    """The values every MNIST run must get right, checked before data, model or trainer are built.

    Each field names its config path; OmegaConf checks the type, `__post_init__` the range."""

    lr: float
    max_epochs: int
    batch_size: int
    eval_batch_size: int
    seed: int
    dropout: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.999
    unaugmented_last_epochs: int = 0
    val_split: int = 0
    split_seed: int = 0
    distill_weight: float = 0.5
    distill_temperature: float = 4.0

    PATHS: ClassVar[dict[str, str]] = {
        "lr": "optimizer.lr",
        "max_epochs": "trainer.max_epochs",
        "batch_size": "data.batch_size",
        "eval_batch_size": "data.eval_batch_size",
        "seed": "seed",
        "dropout": "model.net.dropout",
        "label_smoothing": "model.label_smoothing",
        "ema_decay": "callbacks.ema.decay",
        "unaugmented_last_epochs": "data.unaugmented_last_epochs",
        "val_split": "data.val_split",
        "split_seed": "data.split_seed",
        "distill_weight": "distill.weight",
        "distill_temperature": "distill.temperature",
    }
    # Nets without a dropout, recipes without an EMA, runs without distillation; the ranges of the split, of the
    # unaugmented epochs and of distillation are checked where they are used (MNISTDataModule, Distillation), which
    # are built without the CLI too.
    OPTIONAL: ClassVar[set[str]] = {"dropout", "ema_decay", "distill_weight", "distill_temperature"}

    def __post_init__(self) -> None:
        rules = {
            "lr": (self.lr > 0, "must be > 0"),
            "max_epochs": (self.max_epochs >= 1, "must be >= 1"),
            "batch_size": (self.batch_size >= 1, "must be >= 1"),
            "eval_batch_size": (self.eval_batch_size >= 1, "must be >= 1"),
            "seed": (0 <= self.seed < 2**32, f"must be in [0, {2**32 - 1}] (the range numpy's generator takes)"),
            "dropout": (0.0 <= self.dropout < 1.0, "must be in [0, 1)"),
            "label_smoothing": (0.0 <= self.label_smoothing < 1.0, "must be in [0, 1)"),
            "ema_decay": (0.0 < self.ema_decay < 1.0, "must be in (0, 1)"),
        }
        for name, (ok, rule) in rules.items():
            if not ok:
                raise UserError(f"{self.PATHS[name]}={getattr(self, name)} {rule}")


def validate(cfg: DictConfig) -> None:
    """Raises UserError for a value the config leaves to the user (`???`) and for the first value of `RunSchema`
    with the wrong type or outside its range."""
    check_all_set(cfg)
    schema = OmegaConf.structured(RunSchema)
    for field in fields(RunSchema):
        value = OmegaConf.select(cfg, RunSchema.PATHS[field.name], default=None)
        if value is None and field.name in RunSchema.OPTIONAL:
            continue
        try:
            schema[field.name] = value
        except ValidationError:
            kind = field.type if isinstance(field.type, str) else field.type.__name__
            raise UserError(f"{RunSchema.PATHS[field.name]}={value!r} is not a valid {kind}") from None
    OmegaConf.to_object(schema)
    metric, objectives = cfg.get("optimized_metric"), ("test_acc", "val_acc", "best_val_acc")
    if metric not in objectives:
        raise UserError(f"optimized_metric={metric!r} is not one of {', '.join(objectives)}")
    if metric == "test_acc" and not cfg.get("test", True):
        raise UserError("optimized_metric='test_acc' needs test=true; with test=false use val_acc or best_val_acc")
    every, epochs = cfg.trainer.get("check_val_every_n_epoch") or 1, cfg.trainer.max_epochs
    if metric == "val_acc" and epochs % every:
        raise UserError(
            f"optimized_metric='val_acc' is the last epoch's, and trainer.check_val_every_n_epoch={every} does not "
            f"validate the last of trainer.max_epochs={epochs}; use a max_epochs divisible by it, or best_val_acc"
        )
    unaugmented, max_steps = cfg.data.get("unaugmented_last_epochs", 0), cfg.trainer.get("max_steps", -1)
    if unaugmented > 0 and max_steps > 0:
        raise UserError(
            f"data.unaugmented_last_epochs={unaugmented} counts back from trainer.max_epochs, and "
            f"trainer.max_steps={max_steps} may stop the run before those epochs; set data.unaugmented_last_epochs=0 "
            "or trainer.max_steps=-1"
        )


def suggest_dropout(cfg: DictConfig, trial: Any) -> None:
    """The Optuna search's dropout range (hparams_search=optuna), only for nets that have a dropout: `baseline`'s and
    `augmented`'s have none, and a trial that set one would fail."""
    if "dropout" in cfg.model.net:
        trial.suggest_float("model.net.dropout", 0.0, 0.15)
