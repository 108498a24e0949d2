"""What the search's scale-out buys, measured on this machine; one JSON line per measurement to stdout (or --out):

- `pruning`: the same search (`hparams_search=optuna model=fast`, short trials on the held-out split, the same
  sampler seed) with the median pruner and with `hydra.sweeper.pruner=null`, side by side, one thread each: wall
  time, trials complete/pruned, best held-out accuracy;
- `workers`: trials per hour of one study with 1 worker process and with 2 (one thread each), pruning off;
- `storage`: milliseconds per trial drawn and told (the study lock, ask, tell) for SQLite, a journal file and a
  throwaway PostgreSQL server (where its binaries are installed).

Run from the repository root with the real MNIST under DATA_DIR:
    python scripts/search_benchmark.py --out results/search/bench_<machine>.jsonl
`--epochs`, `--train-fraction`, `--trials` shorten it (the smoke test runs it on tiny data).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager, nullcontext
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from src.core.hardware import cpu_model  # noqa: E402
from src.core.search import Search, open_storage, search_space, trial_counts  # noqa: E402


def search_command(sweep_dir: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    settings = (
        f"model={args.recipe}", "logger=none", "trainer.precision=32-true", "trainer.enable_progress_bar=false",
        f"trainer.max_epochs={args.epochs}", f"trainer.limit_train_batches={args.train_fraction}",
        f"data.val_split={args.val_split}", f"hydra.sweeper.n_trials={args.trials}", "seed=1",
    )  # fmt: skip
    return [sys.executable, "-m", "src.train", "hparams_search=optuna", *settings, f"hydra.sweep.dir={sweep_dir}",
            *args.override, *extra]  # fmt: skip


def run_searches(commands: dict[str, list[str]]) -> dict[str, float]:
    """The commands started together (one thread each); each one's wall time in seconds, taken when it exits."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as logs, ExitStack() as files:
        errors = {name: files.enter_context(open(Path(logs) / f"{index}.err", "w+"))
                  for index, name in enumerate(commands)}  # fmt: skip
        started = time.monotonic()
        processes = {name: subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=errors[name])
                     for name, command in commands.items()}  # fmt: skip
        seconds: dict[str, float] = {}
        try:
            while len(seconds) < len(processes):
                for name, process in processes.items():
                    if name in seconds or process.poll() is None:
                        continue
                    seconds[name] = round(time.monotonic() - started, 1)
                    if process.returncode != 0:  # the measure is lost: say why now, not after the others
                        errors[name].seek(0)
                        last = errors[name].read().strip().splitlines()[-1:] or ["no output"]
                        raise SystemExit(f"error: the {name} search failed: {last[0]}")
                time.sleep(0.1)
        finally:  # stopped or failed: no search is left running
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
                    process.wait()
    return seconds


def study_figures(storage: str, name: str) -> dict[str, object]:
    study = optuna.load_study(study_name=name, storage=open_storage(storage, read_only=True))
    trials = study.get_trials(deepcopy=False)
    counts = trial_counts(trials)
    return {"trials": len(trials), **counts,
            "best_value": round(study.best_value, 4) if counts.get("complete") else None}  # fmt: skip


def pruning(args: argparse.Namespace, workdir: Path) -> Iterator[dict]:
    commands = {
        "pruner on": search_command(workdir / "on", args),
        "pruner off": search_command(workdir / "off", args, "hydra.sweeper.pruner=null"),
    }
    seconds = run_searches(commands)
    for name, folder in (("pruner on", "on"), ("pruner off", "off")):
        figures = study_figures(f"sqlite:///{workdir / folder / 'optuna.db'}", args.recipe)
        yield {"measure": "pruning", "search": name, "seconds": seconds[name], **figures}


def workers(args: argparse.Namespace, workdir: Path) -> Iterator[dict]:
    for count in (1, 2):
        folder = workdir / f"workers{count}"
        command = search_command(folder, args, "hydra.sweeper.pruner=null")
        seconds = max(run_searches({f"worker {n}": command for n in range(count)}).values())
        figures = study_figures(f"sqlite:///{folder / 'optuna.db'}", args.recipe)
        yield {"measure": "workers", "workers": count, "seconds": seconds,
               "trials_per_hour": round(3600 * figures["trials"] / seconds, 1), **figures}  # fmt: skip


@contextmanager
def postgres_if_installed() -> Iterator[str | None]:
    """A throwaway PostgreSQL server from the test suite's helper, or None without PostgreSQL's binaries."""
    from tests.helpers import postgres_bin_dir, throwaway_postgres  # noqa: PLC0415 - test helpers, for this one

    with throwaway_postgres() if postgres_bin_dir() else nullcontext() as url:
        yield url


def storage(args: argparse.Namespace, workdir: Path) -> Iterator[dict]:
    space, _ = search_space({"lr": "tag(log, interval(0.001, 0.1))", "batch": "choice(32, 64, 128)"}, [])
    with postgres_if_installed() as postgres:
        storages = {"sqlite": f"sqlite:///{workdir / 'overhead.db'}", "journal": f"journal:{workdir / 'overhead.log'}"}
        if postgres:
            storages["postgresql"] = postgres
        for kind, url in storages.items():
            search = Search(hydra_context=None, task_function=None, config=None, storage=url, study_name="overhead",
                            n_trials=args.overhead_trials)  # fmt: skip
            study = search.open_study(space)
            milliseconds = []
            with closing(search.lock):
                while True:
                    start = time.perf_counter()
                    trials = search.ask(study, space, None)
                    if not trials:
                        break
                    study.tell(trials[0], trials[0].params["lr"])
                    milliseconds.append(1000 * (time.perf_counter() - start))
            yield {"measure": "storage", "storage": kind, "trials": len(milliseconds),
                   "ms_per_trial_median": round(statistics.median(milliseconds), 2),
                   "ms_per_trial_max": round(max(milliseconds), 2)}  # fmt: skip


MEASURES = {"pruning": pruning, "workers": workers, "storage": storage}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", choices=sorted(MEASURES), action="append", help="default: all three")
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-fraction", type=float, default=0.2, help="of each epoch's training batches")
    parser.add_argument("--val-split", type=int, default=10_000)
    parser.add_argument("--overhead-trials", type=int, default=50)
    parser.add_argument("--override", action="append", default=[], help="a further override for every search")
    parser.add_argument("--out", type=Path, help="append the JSON lines here too")
    args = parser.parse_args(argv)
    machine = {"device": cpu_model(), "cores": os.cpu_count(), "precision": "32-true", "threads_per_worker": 1}
    lines = []
    with tempfile.TemporaryDirectory(prefix="search-bench-") as name:
        for measure in args.measure or sorted(MEASURES):
            for line in MEASURES[measure](args, Path(name)):
                load = {"load_average_1min": round(os.getloadavg()[0], 2)}  # other work on the machine, if any
                line = {**line, **load, "machine": machine, "argv": argv if argv is not None else sys.argv[1:]}
                print(json.dumps(line), flush=True)
                lines.append(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as out:
            out.writelines(json.dumps(line) + "\n" for line in lines)
    return lines


if __name__ == "__main__":
    main()
