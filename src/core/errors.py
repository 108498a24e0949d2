"""Bad input ends in one `error: ...` line naming the value and what is valid, never in a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad value, missing data); reported as one line, without a traceback."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any (hydra's instantiate wraps what a constructor raises)."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error


def reason_of(error: BaseException) -> str:
    """An error as the end of a one-line message: its first line of text, or its type's name where it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def exit_line(error: Exception) -> SystemExit:
    """The `error: ...` exit for a UserError; anything else is re-raised (a bug, to be seen in full)."""
    cause = user_error_in(error)
    if cause is None:
        raise error
    return SystemExit(f"error: {cause}")


class Pruned(Exception):
    """A search's run stopped early because its trial was judged hopeless; raised after the run wrote its figures,
    so that the search records the trial as pruned (not failed)."""
