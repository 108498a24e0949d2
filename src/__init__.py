"""Backprop by hand and MNIST under 20k parameters, as one Lightning + Hydra app."""

import time

# `python -m src.train` imports this package first, before torch and Lightning: the clock for "seconds since the
# process started" (the `fast` recipe's 5-minute goal counts data loading and start-up too).
PROCESS_START = time.perf_counter()


class UserError(Exception):
    """A problem the user can fix (bad value, missing data); reported as one line, without a traceback."""
