"""Entry point: `python -m src.train [overrides]` runs one task (`task=mnist`, the default, or `task=backprop`), or a
sweep of them with `-m`. The task's config names its runner and its sweep report; this file is the CLI policy only:
one-line errors, failed multirun jobs, run dirs that are never reused."""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.core.cli import check_group_choices, check_new_run_dir, one_line_exit
from src.core.errors import Pruned, UserError, user_error_in
from src.core.interrupt import Interrupted
from src.core.logs import quiet_known_noise
from src.core.resolvers import register_resolvers
from src.core.rundirs import FAILED_MARK, continues_its_own_run

log = logging.getLogger(__name__)

register_resolvers()  # before @hydra.main composes, and in launcher processes that import this module to run a job


def check_run_request(cfg: DictConfig, output_dir: Path, multirun: bool, ddp_child: bool) -> None:
    """What the command line may not combine, said before anything is built."""
    if multirun and (cfg.get("resume") or cfg.get("ckpt_path")):
        raise UserError(
            "resume=true and ckpt_path continue one run; run them without -m (a multirun continues when run "
            "again with its hydra.sweep.dir=...)"
        )
    continues_here = cfg.get("resume") or continues_its_own_run(cfg.get("ckpt_path"), output_dir)
    # A multirun run again in its sweep dir: the task keeps each finished job and continues the others (or refuses).
    continues_job = multirun and cfg.task.get("continues_sweep_jobs", False)
    if not (continues_here or continues_job or ddp_child):  # only a run continuing in its own dir may reuse it
        check_new_run_dir(output_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns the task's objective for sweepers. A single run stops with one `error:` line for a UserError. In a
    multirun a failed job writes FAILED into its dir and returns NaN (or, with `raise_failed_jobs`, raises), so the
    other jobs still run; the sweep's end report lists the failures."""
    quiet_known_noise()  # here, not at import: a launcher's worker process (joblib) runs jobs with filters of its own
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    # Lightning's DDP launcher restarts this script per extra device with hydra.run.dir set to this run's dir.
    ddp_child = os.environ.get("LOCAL_RANK", "0") != "0"
    if multirun:
        (output_dir / FAILED_MARK).unlink(missing_ok=True)  # a job run again: its earlier failure is in train.log
    try:
        check_run_request(cfg, output_dir, multirun, ddp_child)
        return instantiate(cfg.task.runner)(cfg, output_dir)
    except Pruned:
        raise  # the search records the trial as pruned; the run wrote its figures and its PRUNED mark
    except Exception as error:
        if multirun:
            cause = user_error_in(error)
            message = f"error: {cause}" if cause else f"{type(error).__name__}: {error}"
            log.error(message, exc_info=cause is None)
            (output_dir / FAILED_MARK).write_text(message + "\n")
            if cfg.raise_failed_jobs:
                raise
            return float("nan")
        raise one_line_exit(error, None if ddp_child else output_dir) from None


def multirun_flag_first(args: list[str]) -> list[str]:
    """argparse stops reading overrides at the first flag; let `-m` stand anywhere (`task=backprop -m task.lr=…`)."""
    return sorted(args, key=lambda arg: arg not in ("-m", "--multirun"))


if __name__ == "__main__":
    sys.argv[1:] = multirun_flag_first(sys.argv[1:])
    check_group_choices(sys.argv[1:])
    try:
        main()
    except Interrupted as stop:
        print(stop.line(sys.argv[1:]), file=sys.stderr)
        raise SystemExit(stop.code) from None
    # Python's last collections at exit walk every object torch and Lightning made (seconds, which the speedrun's
    # clock counts): collect the run's garbage now, then leave the rest to the process's end.
    gc.collect()
    gc.freeze()
