"""Bad input ends in one `error: ...` line naming the value and what is valid, never in a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad value, missing data); reported as one line, without a traceback."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any (hydra's instantiate wraps what a constructor raises)."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error


class Pruned(Exception):
    """A search's run stopped early because its trial was judged hopeless; raised after the run wrote its figures,
    so that the search records the trial as pruned (not failed)."""
