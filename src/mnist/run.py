"""One MNIST run: build data, model and trainer from the config, train, test the final weights, write summary.json."""

from __future__ import annotations

import copy
import json
import logging
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, ProgressBar
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

from src import start_job_clock
from src.core.checkpoint_io import AtomicCheckpointIO
from src.core.errors import Pruned, UserError
from src.core.files import write_json_atomically
from src.core.hardware import emulated_bf16_warning
from src.core.interrupt import Interrupted, StopRequests
from src.core.logs import OWN_CHECKPOINT_DIR
from src.core.provenance import code_version, provenance
from src.core.rundirs import PRUNED_MARK, UNFINISHED_MARK, continues_its_own_run, is_finished
from src.mnist.callbacks import EpochLog, RecordInCheckpoint, StopWhenRequested, TrialReport
from src.mnist.module import Diverged, MNISTClassifier
from src.mnist.record import (
    ALLOWED_TARGETS,
    RunRecord,
    Split,
    check_same_learning,
    learning_settings,
    learning_settings_as_data,
    load_teacher,
    read_checkpoint,
    saved_learning_settings,
)
from src.mnist.schema import validate

log = logging.getLogger(__name__)

TARGET_ACC = 99.4


def net_description(net: torch.nn.Module) -> str:
    """`CompactGapNet(stem=[8, 10], squeeze=8, body=[10, 10, 12])`: enough to write the net into a recipe (a layout
    search's trials differ only in it; `separable` is named where it is not 0, so a full-conv net written into `tiny` or
    `record` needs `separable: 0`); the published nets, whose widths are fixed, give their class name alone."""
    widths = net.extra_repr()
    return f"{type(net).__name__}({widths})" if widths else type(net).__name__


def build_summary(
    cfg: DictConfig,
    model: MNISTClassifier,
    rows: list[dict[str, Any]],
    test: dict[str, float],
    seconds: dict[str, float],
    pruned_at_epoch: int | None,
) -> dict[str, Any]:
    """The run's record: final-epoch test figures plus the per-epoch curve (accuracies in %), and the epoch after
    which a search pruned it (None: not pruned)."""
    evaluated = [row for row in rows if row["val_acc"] is not None]
    best = max(evaluated, key=lambda row: row["val_acc"]) if evaluated else None
    first = next((row for row in evaluated if row["val_acc"] >= TARGET_ACC), None)
    return {
        "recipe": cfg.recipe,
        "params": model.num_params,
        "net": net_description(model.net),
        "seed": cfg.seed,
        "epochs": len(rows),
        "test_acc": round(100.0 * test["test/acc"], 4) if test else None,
        "test_loss": test["test/loss"] if test else None,
        "val_acc": rows[-1]["val_acc"] if rows else None,
        "best_val_acc": best["val_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "first_epoch_at_or_above_99_4": first["epoch"] if first else None,
        "seconds_to_99_4": first["since_start"] if first else None,
        "train_seconds": round(seconds["train"], 2),
        "test_seconds": round(seconds["test"], 2),
        "per_epoch": rows,
        "pruned_at_epoch": pruned_at_epoch,
    }


def configured_callbacks(cfg: DictConfig) -> list[Callback]:
    """`callbacks` less those the trainer's settings leave nothing to do: Lightning refuses a progress-bar callback
    with the bar switched off, and without validation (`trainer.limit_val_batches=0`) a checkpoint chosen by a
    `val/` metric has nothing to go by (Lightning would warn that the metric is missing)."""
    no_bar, no_validation = not cfg.trainer.enable_progress_bar, cfg.trainer.get("limit_val_batches") == 0
    callbacks = [instantiate(callback) for callback in cfg.callbacks.values() if callback is not None]
    return [
        callback
        for callback in callbacks
        if not (no_bar and isinstance(callback, ProgressBar))
        and not (no_validation and isinstance(callback, ModelCheckpoint) and str(callback.monitor).startswith("val/"))
    ]


def relaunches_the_command(trainer: pl.Trainer) -> bool:
    """Lightning starts the other processes of a multi-device DDP or FSDP run by running this command again (unless
    a cluster such as SLURM starts them): a job of a basic or joblib multirun cannot be run again that way."""
    strategy = trainer.strategy
    return (
        isinstance(getattr(strategy, "launcher", None), _SubprocessScriptLauncher)
        and trainer.num_devices > 1  # it starts the other devices' processes of its own node
        and not strategy.cluster_environment.creates_processes_externally
    )


def resume_checkpoint(cfg: DictConfig, output_dir: Path, sweep_job: bool = False) -> Path | None:
    """The checkpoint this run continues from: `ckpt_path`, or with `resume=true` its run dir's last checkpoint; a
    multirun job continues from its dir's last checkpoint where it has one (a sweep run again in its sweep dir)."""
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path).expanduser()
    last = output_dir / UNFINISHED_MARK
    if sweep_job:
        return last if last.is_file() else None
    if not cfg.resume:
        return None
    if not last.is_file():
        raise UserError(
            f"resume=true found no unfinished {cfg.run_name} run under {cfg.runs_dir} (a run dir with {UNFINISHED_MARK}"
            " and no summary.json); pass ckpt_path=... or start a new run without resume=true"
        )
    return last


def train(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    job_start = start_job_clock()  # before data loading: the `fast` goal counts it
    code_version()  # the commit the run starts from, cached: the checkout may change while it trains
    validate(cfg)
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    checkpoint_path = resume_checkpoint(cfg, output_dir, sweep_job=multirun)
    checkpoint, record = read_checkpoint(checkpoint_path) if checkpoint_path is not None else (None, None)
    if multirun and record is None:
        check_same_learning_as_saved(cfg, output_dir)
    if multirun and is_finished(output_dir):  # a multirun run again in its sweep dir: this job had finished
        return finished_job(record, cfg, output_dir)
    continues_own_run = continues_its_own_run(checkpoint_path, output_dir)
    if continues_own_run:
        check_same_learning(record.learning, learning_settings(cfg), output_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # fail in the first second, not after the model and trainer are built
    model = instantiate(cfg.model)
    log.info("recipe %s: %s has %s parameters", cfg.recipe, net_description(model.net), f"{model.num_params:,}")
    if record is not None:
        record.load_weights(copy.deepcopy(model), checkpoint["state_dict"], checkpoint_path, "ckpt_path")
        log.info("continuing from %s", checkpoint_path)
    if model.distillation is not None:
        split = Split(datamodule.val_split, datamodule.split_seed)
        model.distillation.use_teacher(load_teacher(model.distillation.checkpoint, split))

    epoch_log = EpochLog(job_start)
    report = trial_report(cfg, epoch_log)
    stop = StopRequests()
    callbacks = [*configured_callbacks(cfg), epoch_log, *([report] if report else []),
                 RecordInCheckpoint(RunRecord.of_run(cfg, model.net)), StopWhenRequested(stop)]  # fmt: skip
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO(ALLOWED_TARGETS)]
    )
    if multirun and relaunches_the_command(trainer):
        raise UserError(
            f"trainer.strategy={cfg.trainer.strategy} restarts this command once per process, which a multirun "
            "job cannot do; run it without -m, or sweep with hydra/launcher=slurm (one task per device)"
        )
    datamodule.check_split(trainer.world_size)
    slow_precision = emulated_bf16_warning(str(trainer.precision), trainer.strategy.root_device.type)
    if slow_precision:
        log.warning(slow_precision)

    seconds = {"train": 0.0, "test": 0.0}
    start = time.perf_counter()
    with stop:
        try:
            with warnings.catch_warnings():
                if continues_own_run:
                    message, module = OWN_CHECKPOINT_DIR  # continuing this dir's own run: its checkpoints are there
                    warnings.filterwarnings("ignore", message=message, module=module)
                if stop.signum is None:
                    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint_path, weights_only=True)
            seconds["train"] = time.perf_counter() - start
            start = time.perf_counter()
            test = trainer.test(model, datamodule=datamodule, verbose=False)[0] if cfg.test and not stop.signum else {}
            seconds["test"] = time.perf_counter() - start
        except Diverged as error:
            last_good = output_dir / UNFINISHED_MARK
            kept = f"last good checkpoint: {last_good}" if last_good.is_file() else "no checkpoint had been written yet"
            raise UserError(f"training diverged: {error}; {kept}") from None
        except (SystemExit, KeyboardInterrupt):  # Lightning's SIGTERMException, or its exit after a second Ctrl-C
            if stop.signum is None:
                raise
            seconds["train"] = seconds["train"] or time.perf_counter() - start
        if stop.signum is not None:
            summary = build_summary(cfg, model, epoch_log.rows, {}, seconds, report.pruned_at if report else None)
            last = output_dir / UNFINISHED_MARK if (output_dir / UNFINISHED_MARK).is_file() else None
            summary["interrupted"] = {
                "signal": signal.Signals(stop.signum).name,
                "epoch": trainer.current_epoch + 1,  # the epoch it stopped in (one past the last, after the last)
                "step": trainer.global_step,
                "checkpoint": str(last) if last else None,
            }
            write_summary(summary, checkpoint_path, trainer, output_dir)
            if last:
                kept = f"{last} holds epoch {len(epoch_log.rows)}"
            else:  # e.g. the speedrun, whose settings switch checkpoints off
                why = "its settings write none" if epoch_log.rows else "no epoch had finished"
                kept = f"it kept no checkpoint to continue from ({why})"
            what = (
                f"interrupted by {summary['interrupted']['signal']} in epoch {summary['interrupted']['epoch']} at "
                f"step {trainer.global_step}; {kept}; {output_dir / 'summary.json'} records the figures so far"
            )
            log.warning(what)
            stop.hand_over()  # a launcher's requeue, where it had claimed the signal
            sweep_dir = Path(HydraConfig.get().sweep.dir).resolve() if multirun else None
            raise Interrupted(stop.signum, what, output_dir, sweep_dir, last)

    summary = build_summary(cfg, model, epoch_log.rows, test, seconds, report.pruned_at if report else None)
    write_summary(summary, checkpoint_path, trainer, output_dir)
    if not trainer.is_global_zero:  # a DDP process other than rank 0: its metrics were synced into rank 0's
        return summary
    if summary["pruned_at_epoch"]:
        epochs = f"{summary['pruned_at_epoch']} of {cfg.trainer.max_epochs}"
        (output_dir / PRUNED_MARK).write_text(f"pruned at epoch {epochs}: val acc {summary['val_acc']}\n")
    if logger:
        choices = {group: choice for group, choice in HydraConfig.get().runtime.choices.items() if "hydra" not in group}
        hparams = {**choices, "seed": cfg.seed, "lr": cfg.optimizer.lr, "batch_size": cfg.data.batch_size}
        finals = {name: summary[name] for name in ("test_acc", "val_acc", "best_val_acc")}
        # Only the figures the run has: none for the test with test=false, none for validation without a val epoch.
        metrics = {f"hparams/{name}": value for name, value in finals.items() if value is not None}
        logger.log_hyperparams({**hparams, "params": model.num_params, "epochs": summary["epochs"]}, metrics)
        logger.finalize("success")
    if cfg.test:
        weights = "EMA weights" if cfg.callbacks.get("ema") else "final-epoch weights"
        log.info(
            "test acc %.2f%% (%s), test loss %.4f; summary: %s",
            summary["test_acc"], weights, summary["test_loss"], output_dir / "summary.json",
        )  # fmt: skip
    elif summary["val_acc"] is not None:
        log.info("final val acc %.2f%% (test=false); summary: %s", summary["val_acc"], output_dir / "summary.json")
    else:  # e.g. the speedrun's schedule, which evaluates nothing during training
        log.info("nothing evaluated (test=false, no validation epoch); summary: %s", output_dir / "summary.json")
    return summary


def trial_report(cfg: DictConfig, epoch_log: EpochLog) -> TrialReport | None:
    """For a search's run (the search sets `search_trial`): the callback that reports to its trial."""
    if cfg.get("search_trial") is None:
        return None
    from src.core.search import trial_of_this_run  # noqa: PLC0415 - Optuna's import is paid by searches only

    return TrialReport(trial_of_this_run(cfg.search_trial), epoch_log)


def write_summary(summary: dict[str, Any], resumed_from: Path | None, trainer: pl.Trainer, output_dir: Path) -> None:
    """Adds where the run continued from and the provenance, and writes summary.json (rank 0 only)."""
    summary["resumed_from"] = str(resumed_from) if resumed_from else None
    summary.update(provenance(str(trainer.precision), trainer.strategy.root_device, trainer.world_size))
    if trainer.is_global_zero:  # a DDP process other than rank 0: its metrics were synced into rank 0's
        write_json_atomically(output_dir / "summary.json", summary)


def check_same_learning_as_saved(cfg: DictConfig, output_dir: Path) -> None:
    """A multirun job with no checkpoint to compare with (a recipe that writes none, a job that had not finished an
    epoch), in a dir an earlier session made: its first config, `.hydra/config.yaml`, read as data, gives the settings
    it ran under. A sweep dir never mixes settings, kept jobs included."""
    saved, continued = output_dir / ".hydra" / "config.yaml", any((output_dir / ".hydra").glob("*/config.yaml"))
    if saved.is_file() and continued:  # this session's config goes beside an earlier one (`config_subdir`)
        now = learning_settings_as_data(OmegaConf.to_container(cfg, resolve=False))
        check_same_learning(saved_learning_settings(saved), now, output_dir)


def finished_job(record: RunRecord | None, cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """A multirun job whose dir holds its finished run: kept as it is, if it learned under these settings (compared
    with its checkpoint's record here, or before, without one, with its saved config)."""
    if record is not None:
        check_same_learning(record.learning, learning_settings(cfg), output_dir)
    log.info("%s finished in an earlier session: kept (%s)", output_dir.name, output_dir / "summary.json")
    return json.loads((output_dir / "summary.json").read_text())


def run(cfg: DictConfig, output_dir: Path) -> float:
    """The task's runner (conf/task/mnist.yaml): trains, and returns `optimized_metric` for sweepers (a pruned
    search trial raises Pruned instead, after writing its figures)."""
    summary = train(cfg, output_dir)
    if summary.get("pruned_at_epoch"):  # summaries kept from before pruning have no such key
        raise Pruned(f"pruned at epoch {summary['pruned_at_epoch']}")
    return summary[cfg.optimized_metric]
