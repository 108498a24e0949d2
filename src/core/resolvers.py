"""The OmegaConf resolvers `conf/` uses. Each entry point registers them before Hydra composes its config."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from src.core.hardware import native_precision
from src.core.logs import stderr_is_terminal
from src.core.rundirs import config_subdir, optuna_storage, run_dir

RESOLVERS = {
    "native_precision": native_precision,
    "run_dir": run_dir,
    "config_subdir": config_subdir,
    "optuna_storage": optuna_storage,
    "stderr_is_terminal": stderr_is_terminal,
}
# Resolved once per config, and carried with it into a launcher's job processes (submitit pickles the config): a
# job, and a job submitit requeues, writes into the sweep dir of the command that launched it, not one named after
# its own process.
CACHED_RESOLVERS = {"pid": os.getpid}


def register_resolvers() -> None:
    """Idempotent: entry points, tests and launcher processes (which unpickle a job in a fresh interpreter) call it."""
    for name, resolver in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
    for name, resolver in CACHED_RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True, use_cache=True)
