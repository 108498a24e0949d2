"""Backprop by hand and MNIST under 20k parameters, as one Lightning + Hydra app."""

import time

# `python -m src.train` imports this package first, before torch and Lightning: the clock for "seconds since the
# process started" (the `fast` recipe's 5-minute goal counts data loading and start-up too).
PROCESS_START = time.perf_counter()
_jobs_started = 0


def start_job_clock() -> float:
    """When this job's clock starts: process start for a process's first job; for each later job of a multirun (which
    reuses the imported modules), the moment it starts, so no job is charged for the jobs before it."""
    global _jobs_started
    _jobs_started += 1
    return PROCESS_START if _jobs_started == 1 else time.perf_counter()


class UserError(Exception):
    """A problem the user can fix (bad value, missing data); reported as one line, without a traceback."""
