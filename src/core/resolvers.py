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
    "pid": os.getpid,
    "stderr_is_terminal": stderr_is_terminal,
}


def register_resolvers() -> None:
    """Idempotent: entry points, tests and launcher processes (which unpickle a job in a fresh interpreter) call it.
    `pid` is cached like Hydra's `now`: a launcher's worker processes get the cache of the command's config, so a
    multirun's sweep dir (`.../<time>-<pid>`) is the command's, not each worker's."""
    for name, resolver in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True, use_cache=name == "pid")
