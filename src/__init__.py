"""Backprop by hand and MNIST under 20k parameters, as one Lightning + Hydra app.

`mnist/` and `backprop/` are the two tasks; `core/` is the run plumbing both share (resolvers, run dirs, one-line
errors, checkpoints, tables, provenance). The modules directly in `src/` are the command-line entry points.
"""

import time

# `python -m src.train` imports this package first, before torch and Lightning: the clock for "seconds since the
# process started" (the `fast` and `speedrun` goals count data loading and start-up too).
PROCESS_START = time.perf_counter()
_jobs_started = 0


def start_job_clock() -> float:
    """When this job's clock starts: process start for a process's first job; for each later job of a multirun (which
    reuses the imported modules), the moment it starts, so no job is charged for the jobs before it."""
    global _jobs_started
    _jobs_started += 1
    return PROCESS_START if _jobs_started == 1 else time.perf_counter()
