"""From command line to a checked config: the resolvers `conf/` uses, the run-dir rules, and the schema that turns a
mistyped value into one line before anything is built."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from src import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
UNFINISHED_MARK = "checkpoints/last.ckpt"
FAILED_MARK = "FAILED"  # written into a multirun job dir whose job failed


def native_precision(accelerator: str) -> str:
    """bf16 autocast where the hardware runs bf16 natively (AMX / AVX512-BF16 CPUs, Ampere+ GPUs), else fp32.

    The dropout_steplr step alone on this project's 2-core AMX machine: 2,258 img/s in bf16 vs 1,346 in fp32
    (`make bench`).
    """
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    cpu_has_bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # a private op: may go
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def latest_unfinished_run(runs_root: Path, run_name: str) -> Path | None:
    """The newest `<stamp>_<run_name>` dir with a last checkpoint and no summary.json: what `resume=true` continues."""
    candidates = [
        path for path in runs_root.glob(f"*_{run_name}") if (path / UNFINISHED_MARK).is_file() and not is_finished(path)
    ]
    return max(candidates, key=lambda path: path.name, default=None)


def run_dir(resume: bool, ckpt_path: str | None, runs_root: str, stamp: str, run_name: str) -> str:
    """hydra.run.dir. A new run gets `<stamp>_<run_name>` (conf/ puts the pid in the stamp: runs started in the
    same microsecond stay apart); `resume=true` continues the newest unfinished run of the same name; `ckpt_path`
    inside an unfinished run's `checkpoints/` continues that run. Anything else (a finished run, a checkpoint
    from elsewhere) starts a new dir, so nothing a run wrote is ever overwritten."""
    if ckpt_path:
        owner = Path(ckpt_path).expanduser().resolve().parent
        if owner.name == "checkpoints" and (owner.parent / ".hydra").is_dir() and not is_finished(owner.parent):
            return str(owner.parent)
    elif resume:
        unfinished = latest_unfinished_run(Path(runs_root), run_name)
        if unfinished is not None:
            return str(unfinished)
    check_writable(Path(runs_root))
    return str(Path(runs_root) / f"{stamp}_{run_name}")


def check_writable(folder: Path) -> None:
    """Hydra creates the run dir before any of our code runs, and fails with a traceback; say it in one line.

    SystemExit, not UserError: raised inside a resolver, only a BaseException reaches the user unwrapped."""
    existing = next(path for path in (folder.absolute(), *folder.absolute().parents) if path.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is a file" if not existing.is_dir() else "is not writable"
        raise SystemExit(f"error: cannot write the run's output dir under {folder}: {existing} {why}")


def config_subdir(output_dir: str, stamp: str) -> str:
    """hydra.output_subdir: `.hydra`, or `.hydra/<stamp>` when the dir already holds one (a resumed run), so the
    first run's config and overrides are kept."""
    return f".hydra/{stamp}" if (Path(output_dir) / ".hydra" / "config.yaml").is_file() else ".hydra"


def optuna_storage(sweep_dir: str) -> str:
    """The Optuna study's SQLite file, in the sweep dir; made here because Hydra creates that dir only after the
    sweeper has opened its storage."""
    folder = Path(sweep_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


RESOLVERS = {
    "native_precision": native_precision,
    "run_dir": run_dir,
    "config_subdir": config_subdir,
    "optuna_storage": optuna_storage,
    "pid": os.getpid,
}
for _name, _resolver in RESOLVERS.items():
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any (hydra's instantiate wraps what a constructor raises)."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error


def holds_only_hydra_files(output_dir: Path) -> bool:
    """Nothing but Hydra's config and the console logs (`train.log`, a DDP process's `train_ddp_process_N.log`)."""
    return all(path.name == ".hydra" or path.suffix == ".log" for path in output_dir.iterdir())


def one_line_exit(error: Exception, output_dir: Path | None = None) -> SystemExit:
    """The `error: ...` exit for a UserError (re-raises anything else: that is a bug to see in full). A run that
    failed before producing anything leaves no directory, only Hydra's config and log would be in it."""
    cause = user_error_in(error)
    if cause is None:
        raise error
    if output_dir is not None and output_dir.is_dir() and holds_only_hydra_files(output_dir):
        shutil.rmtree(output_dir, ignore_errors=True)  # a DDP process may still be closing its log
    return SystemExit(f"error: {cause}")


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # not even its parent package (hydra_plugins) is there
        return False


def suggest_dropout(cfg: DictConfig, trial: Any) -> None:
    """The Optuna search's dropout range (hparams_search=optuna), only for nets that have a dropout: `baseline`'s and
    `augmented`'s have none, and a trial that set one would fail."""
    if "dropout" in cfg.model.net:
        trial.suggest_float("model.net.dropout", 0.0, 0.15)


PLUGINS = {  # option → (the Hydra plugin that provides it, its package); all are in the `sweep` extras
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
    "hparams_search=optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
}


def check_group_choices(args: list[str]) -> None:
    """`model=recrod` or `model=record,recrod`: one line naming the bad option and the valid ones, before Hydra's
    multi-line report; an option whose Hydra plugin is not installed: one line saying how to install it."""
    for arg in args:
        group, sep, value = arg.partition("=")
        group = group.lstrip("+~")
        module, package = PLUGINS.get(f"{group}={value.strip()}", (None, None))
        if module and not module_installed(module):
            raise SystemExit(
                f"error: {group}={value.strip()} needs the {package} plugin; install the sweep extras with "
                "`make install` (or pip install -e '.[sweep]')"
            )
        if not sep or "." in group or "/" in group or not (CONF_DIR / group).is_dir():
            continue
        options = group_options(group)
        for choice in value.split(","):
            if choice.strip() and choice.strip() not in options and choice.strip() != "null":
                raise SystemExit(f"error: {group}={choice.strip()} is not an option; valid: {', '.join(options)}")


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

    PATHS: ClassVar[dict[str, str]] = {
        "lr": "optimizer.lr",
        "max_epochs": "trainer.max_epochs",
        "batch_size": "data.batch_size",
        "eval_batch_size": "data.eval_batch_size",
        "seed": "seed",
        "dropout": "model.net.dropout",
        "label_smoothing": "model.label_smoothing",
        "ema_decay": "callbacks.ema.decay",
    }
    OPTIONAL: ClassVar[set[str]] = {"dropout", "ema_decay"}  # nets without a dropout, recipes without an EMA

    def __post_init__(self) -> None:
        rules = {
            "lr": (self.lr > 0, "must be > 0"),
            "max_epochs": (self.max_epochs >= 1, "must be >= 1"),
            "batch_size": (self.batch_size >= 1, "must be >= 1"),
            "eval_batch_size": (self.eval_batch_size >= 1, "must be >= 1"),
            "dropout": (0.0 <= self.dropout < 1.0, "must be in [0, 1)"),
            "label_smoothing": (0.0 <= self.label_smoothing < 1.0, "must be in [0, 1)"),
            "ema_decay": (0.0 < self.ema_decay < 1.0, "must be in (0, 1)"),
        }
        for name, (ok, rule) in rules.items():
            if not ok:
                raise UserError(f"{self.PATHS[name]}={getattr(self, name)} {rule}")


def validate(cfg: DictConfig) -> None:
    """Raises UserError for the first value of `RunSchema` with the wrong type or outside its range."""
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
