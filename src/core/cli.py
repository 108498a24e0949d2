"""How the entry points meet the command line: a mistyped group option or a missing plugin named before Hydra
composes, a run that would write into another run's dir refused, and every UserError ended as one `error:` line."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.core.config import check_all_set
from src.core.errors import UserError, exit_line, user_error_in
from src.core.rundirs import CONF_DIR, holds_only_hydra_files, remove_what_the_start_wrote

T = TypeVar("T")


def check_new_run_dir(output_dir: Path) -> None:
    """A run (or eval) writes only into a dir that holds nothing but Hydra's config and logs, never another run's."""
    if not holds_only_hydra_files(output_dir):
        raise UserError(f"{output_dir} already holds another run's files; give hydra.run.dir a new folder")


def in_new_dir(cfg: DictConfig, work: Callable[[DictConfig, Path], T]) -> T:
    """An entry point that writes only into its own new dir (Hydra's run dir): `work(cfg, dir)` once every value is
    set and the dir holds no other run's files; any UserError is one line, the dir left as it was found."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_all_set(cfg)
        check_new_run_dir(output_dir)
        return work(cfg, output_dir)
    except Exception as error:
        raise one_line_exit(error, output_dir) from None


def one_line_exit(error: Exception, output_dir: Path | None = None) -> SystemExit:
    """The `error: ...` exit for a UserError (re-raises anything else: that is a bug to see in full). A run that
    failed before producing anything leaves its dir as it found it: no dir, or the one that was there."""
    if output_dir is not None and user_error_in(error) is not None:
        remove_what_the_start_wrote(output_dir)
    return exit_line(error)


def group_options(group: str) -> list[str]:
    """The options of a config group: conf/'s files; for a group of Hydra's own (`hydra/sweeper/pruner`), also what
    Hydra and its plugins provide, as Hydra's config loader lists them."""
    if "/" not in group:
        return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # not even its parent package (hydra_plugins) is there
        return False


PLUGINS = {  # option → (the Hydra plugin that provides it, its package); all are in the `sweep` extras
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/sweeper=optuna": ("optuna", "optuna"),  # the project's own sweeper (hydra_plugins/optuna_search) needs it
    "hparams_search=optuna": ("optuna", "optuna"),
    "hparams_search=layout": ("optuna", "optuna"),
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
        if not sep or "." in group or not (CONF_DIR / group).is_dir():
            continue
        options = group_options(group)
        for choice in value.split(","):
            if choice.strip() and choice.strip() not in options and choice.strip() != "null":
                raise SystemExit(f"error: {group}={choice.strip()} is not an option; valid: {', '.join(options)}")
