"""Where a run writes: a new dir per run, the unfinished run `resume=true` continues, and the rule that nothing a
run wrote is ever overwritten."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
UNFINISHED_MARK = "checkpoints/last.ckpt"
FAILED_MARK = "FAILED"  # written into a multirun job dir whose job failed
PRUNED_MARK = "PRUNED"  # written into a search's job dir whose trial was pruned, with the epoch
# Each run dir this process started in: its `entries` then, or None where Hydra made it (the only dirs a failed start
# may remove whole).
RUN_DIRS_AT_START: dict[Path, dict[Path, int] | None] = {}


class NoteRunDirAtStart(Callback):
    """Notes, before Hydra writes into it, whether a run's dir is new or what it already holds: a run that stops
    before producing anything then leaves it as it was (`remove_what_the_start_wrote`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir).resolve()  # `now` is cached: the dir Hydra is about to use
        RUN_DIRS_AT_START[run_dir] = entries(run_dir) if run_dir.exists() else None


def entries(run_dir: Path) -> dict[Path, int]:
    """The run dir's own entries and everything under its `.hydra`, with their modification times (ns): enough to
    tell whether a run wrote anything (a checkpoint, TensorBoard, a summary changes a top-level entry) without
    walking a big folder given as hydra.run.dir."""
    paths = [*run_dir.iterdir(), *(run_dir / ".hydra").rglob("*")]
    return {path: path.stat().st_mtime_ns for path in paths}


def remove_what_the_start_wrote(output_dir: Path) -> None:
    """After a run or eval stopped with one line: a dir it made goes, if it holds only Hydra's config and the logs;
    in a dir that was there (a refused resume, an eval pointed at a run's dir) the config Hydra wrote beside the first
    one (`.hydra/<time>/`) and new logs go, if nothing else changed. Lines added to an existing log stay."""
    run_dir = output_dir.resolve()
    if run_dir not in RUN_DIRS_AT_START:
        return
    before = RUN_DIRS_AT_START[run_dir]
    if before is None:  # made by this start
        if run_dir.is_dir() and holds_only_hydra_files(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # a DDP process may still be closing its log
        return
    hydra = run_dir / ".hydra"
    changed = [path for path, mtime in entries(run_dir).items() if before.get(path) != mtime]
    if not all(path == hydra or hydra in path.parents or path.suffix == ".log" for path in changed):
        return  # the run wrote something of its own: everything stays
    for path in sorted((path for path in changed if path not in before), reverse=True):  # files before their dirs
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()


def is_finished(run_dir: Path) -> bool:
    """The run wrote its summary.json, and not one recording that a signal stopped it."""
    summary = run_dir / "summary.json"
    return summary.is_file() and "interrupted" not in json.loads(summary.read_text())


def latest_unfinished_run(runs_root: Path, run_name: str) -> Path | None:
    """The newest `<stamp>_<run_name>` dir with a last checkpoint and no summary.json: what `resume=true` continues."""
    candidates = [
        path for path in runs_root.glob(f"*_{run_name}") if (path / UNFINISHED_MARK).is_file() and not is_finished(path)
    ]
    return max(candidates, key=lambda path: path.name, default=None)


def unfinished_run_of(ckpt_path: str | Path) -> Path | None:
    """The unfinished run dir a checkpoint was written into (`<run>/checkpoints/`, beside `<run>/.hydra`): the one dir
    a run continuing from that checkpoint may write into."""
    owner = Path(ckpt_path).expanduser().resolve().parent
    if owner.name == "checkpoints" and (owner.parent / ".hydra").is_dir() and not is_finished(owner.parent):
        return owner.parent
    return None


def continues_its_own_run(ckpt_path: str | Path | None, output_dir: Path) -> bool:
    """`ckpt_path` is the last checkpoint of the unfinished run in `output_dir`: continuing it writes into its dir."""
    return bool(ckpt_path) and unfinished_run_of(ckpt_path) == output_dir.resolve()


def run_dir(resume: bool, ckpt_path: str | None, runs_root: str, stamp: str, run_name: str) -> str:
    """hydra.run.dir. A new run gets `<stamp>_<run_name>` (conf/ puts the pid in the stamp: runs started in the
    same microsecond stay apart); `resume=true` continues the newest unfinished run of the same name; `ckpt_path`
    inside an unfinished run's `checkpoints/` continues that run. Anything else (a finished run, a checkpoint
    from elsewhere) starts a new dir, so nothing a run wrote is ever overwritten."""
    if ckpt_path:
        owner = unfinished_run_of(ckpt_path)
        if owner is not None:
            return str(owner)
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


def holds_only_hydra_files(output_dir: Path) -> bool:
    """Nothing but Hydra's config and the console logs (`train.log`, a DDP process's `train_ddp_process_N.log`)."""
    return all(path.name == ".hydra" or path.suffix == ".log" for path in output_dir.iterdir())
