"""Backprop by hand and MNIST under 20k parameters, as one Lightning + Hydra app."""


class UserError(Exception):
    """A problem the user can fix (bad value, missing data); reported as one line, without a traceback."""
