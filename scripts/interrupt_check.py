"""Interruption checks (issue 38), each printing one JSON line per event and a last summary line.

`repeat`: a 6-job multirun of short deterministic runs on the suite's tiny digits, run again and again in its sweep
dir, each session sent SIGTERM, SIGINT or SIGKILL during a job's training (at a random moment of the epoch after a
checkpoint the session wrote, one that is not the job's last epoch's) until it ends; compared with the same multirun
run uninterrupted: per-job summaries (less wall-clock figures), the seed table's non-time columns, no finished job's
files changed, no job tested twice; statuses 143 and 130 are clean stops.

`lost`: a run stopped mid-epoch by SIGTERM or SIGKILL: the seconds of training since its last checkpoint (what the
resumed run repeats) and, for SIGTERM, how long the stop took.

    python scripts/interrupt_check.py repeat --rounds-seed 0 > results/interrupt/repeat.jsonl
    DATA_DIR=<MNIST root> python scripts/interrupt_check.py lost > results/interrupt/lost_fast.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import TINY_RUN, comparable, sigint_as_at_a_terminal, start_cli, write_tiny_mnist  # noqa: E402

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}
EPOCHS = 3
SWEEP = ("-m", "seed=1,2,3,4,5,6", *TINY_RUN, f"trainer.max_epochs={EPOCHS}", "trainer.deterministic=true",
         "logger=none")  # fmt: skip
TIME_COLUMNS = ("minutes to 99.4 % from start (per seed)", "minutes per run")


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def finished_files(sweep: Path) -> dict[str, str]:
    """sha256 of each file a finished job wrote that must never change: its summary and checkpoints."""
    hashes = {}
    for summary in sweep.glob("*/summary.json"):
        if "interrupted" not in json.loads(summary.read_text()):
            for path in [summary, *summary.parent.glob("checkpoints/*.ckpt")]:
                hashes[str(path.relative_to(sweep))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def table(sweep: Path) -> list[dict]:
    with (sweep / "results.csv").open() as handle:
        return [{key: value for key, value in row.items() if key not in TIME_COLUMNS} for row in csv.DictReader(handle)]


def training_job(sweep: Path, since_ns: int, process: subprocess.Popen) -> tuple[str, int] | None:
    """The first job of this session (started at `since_ns`) to write a `last.ckpt` after an epoch that is not its
    last, with the epoch it is now training (1-based); None if the session ends first. Checkpoints are renamed into
    place, so each is read whole."""
    seen: set[tuple[Path, int]] = set()
    while process.poll() is None:
        for last in sweep.glob("*/checkpoints/last.ckpt"):
            with contextlib.suppress(OSError):  # replaced between listing and reading: the next round reads it
                written = last.stat().st_mtime_ns
                if written >= since_ns and (last, written) not in seen:
                    seen.add((last, written))
                    finished_epochs = torch.load(last, weights_only=True)["epoch"] + 1
                    if finished_epochs < EPOCHS:
                        return last.parent.parent.name, finished_epochs + 1
        time.sleep(0.01)
    return None


def repeat(rng: random.Random, work: Path, interruptions_at_most: int) -> None:
    data = write_tiny_mnist(work / "tiny")
    reference, sweep = work / "reference", work / "interrupted"
    started = time.perf_counter()
    assert start_cli(*SWEEP, f"hydra.sweep.dir={reference}", data_dir=data, stderr=work / "reference.log").wait() == 0
    epochs = [row["seconds"] for path in reference.glob("*/summary.json")
              for row in json.loads(path.read_text())["per_epoch"]]  # fmt: skip
    epoch_seconds = statistics.median(epochs)
    emit({"event": "reference", "seconds": round(time.perf_counter() - started, 1), "epoch_s": epoch_seconds})
    sessions = interruptions = clean_stops = changed = 0
    while True:
        before = finished_files(sweep) if sweep.exists() else {}
        since_ns = time.time_ns()
        process = start_cli(*SWEEP, f"hydra.sweep.dir={sweep}", data_dir=data, stderr=work / "interrupted.log")
        sessions += 1
        # Once every job has finished, or after enough interruptions, the session is let end.
        done = len({path.split("/")[0] for path in before}) == len(SWEEP[1].split(","))
        name = rng.choice(sorted(SIGNALS))
        delay = rng.uniform(0.1, 0.9) * epoch_seconds  # drawn every session, used or not: the same draws each time
        training = None if done or interruptions >= interruptions_at_most else training_job(sweep, since_ns, process)
        if training is None:  # let end, or it ended before a job trained an epoch that is not its last
            status, name, delay = process.wait(), None, None
        else:
            time.sleep(delay)
            process.send_signal(SIGNALS[name])
            status = process.wait()
            interruptions += 1
            clean_stops += status == 128 + SIGNALS[name]
        after = finished_files(sweep) if sweep.exists() else {}
        changed += sum(after.get(path) != digest for path, digest in before.items())
        emit({"event": "session", "session": sessions, "signal": name, "job": training and training[0],
              "epoch": training and training[1], "after_checkpoint_s": delay and round(delay, 2), "status": status,
              "jobs_finished": len({path.split("/")[0] for path in after})})  # fmt: skip
        if name is None:
            assert status == 0, f"session {sessions} ended with {status}: see {work / 'interrupted.log'}"
            break
    jobs = sorted(path.name for path in reference.glob("*_seed*"))
    mismatches = {}
    for job in jobs:
        got, expected = (
            comparable(json.loads((folder / job / "summary.json").read_text())) for folder in (sweep, reference)
        )
        if got != expected:
            mismatches[job] = sorted(key for key in got.keys() | expected.keys() if got.get(key) != expected.get(key))
    tested_twice = [job for job in jobs if (sweep / job / "train.log").read_text().count("] - test acc ") != 1]
    emit({"event": "result", "jobs": len(jobs), "sessions": sessions, "interruptions": interruptions,
          "clean_stops": clean_stops, "job_mismatches": mismatches, "table_matches": table(sweep) == table(reference),
          "finished_files_changed": changed, "jobs_tested_twice": tested_twice})  # fmt: skip


def lost(rng: random.Random, work: Path, overrides: list[str]) -> None:
    """Each signal once: started, its epoch timed between the checkpoints of epochs 1 and 2, stopped at a random
    moment of epoch 3; the training since epoch 2's checkpoint is what a resumed run repeats."""
    for name in ("SIGTERM", "SIGKILL"):
        run_dir = work / name
        process = start_cli(*overrides, f"hydra.run.dir={run_dir}", data_dir=Path(os.environ["DATA_DIR"]),
                            stderr=work / f"{name}.log")  # fmt: skip
        last = run_dir / "checkpoints" / "last.ckpt"
        written = []
        while len(written) < 2:
            assert process.poll() is None, f"the run ended before its second checkpoint: see {work / f'{name}.log'}"
            if last.is_file() and last.stat().st_mtime not in written:
                written.append(last.stat().st_mtime)
            time.sleep(0.02)
        epoch_seconds = written[1] - written[0]
        time.sleep(rng.uniform(0.2, 0.8) * epoch_seconds)
        checkpoint_written, sent = last.stat().st_mtime, time.time()
        process.send_signal(SIGNALS[name])
        status = process.wait()
        stopped = time.time()
        summary = run_dir / "summary.json"
        record = json.loads(summary.read_text()).get("interrupted") if summary.is_file() else None
        emit({"event": "lost", "signal": name, "status": status, "epoch_s": round(epoch_seconds, 2),
              "training_since_checkpoint_s": round(sent - checkpoint_written, 2),
              "stop_took_s": round(stopped - sent, 2), "interrupted": record})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=["repeat", "lost"])
    parser.add_argument("--rounds-seed", type=int, default=0, help="seed of the random moments and signals")
    parser.add_argument("--interruptions", type=int, default=20, help="repeat: at most this many, then it may end")
    parser.add_argument(
        "--run", nargs="*", default=["model=fast", "trainer.max_epochs=4", "trainer.limit_train_batches=0.5"],
        help="lost: the run's overrides (default: `fast`, 4 epochs of half the training batches)",
    )  # fmt: skip
    args = parser.parse_args()
    sigint_as_at_a_terminal()  # the runs it starts take Ctrl-C as at a terminal, also where it runs in the background
    rng = random.Random(args.rounds_seed)
    with tempfile.TemporaryDirectory() as work:
        emit({"event": "command", "argv": sys.argv[1:], "sweep": list(SWEEP) if args.check == "repeat" else args.run})
        repeat(rng, Path(work), args.interruptions) if args.check == "repeat" else lost(rng, Path(work), args.run)


if __name__ == "__main__":
    main()
