"""A run that a signal stops cleanly: SIGTERM, SIGINT and SIGUSR1 stop it at the next step boundary, through
Lightning's own SIGTERM handling (the loops raise `SIGTERMException` after the step, or after the epoch's
checkpoints at its end); a second Ctrl-C stops it at once. The run then records the interruption, says how to
continue (or, with no checkpoint to continue from, how to start again), and exits with 128 + the signal's number."""

from __future__ import annotations

import shlex
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from src.core.urls import shown

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# Signals a launcher may have claimed before the run started (submitit: SIGUSR2, the time limit's warning or a
# preemption, on which it checkpoints the job and requeues it). With a handler installed, the run stops cleanly
# first and then hands the signal over; without one, it is left alone.
HANDED_OVER = (signal.SIGUSR2,)


class Interrupted(SystemExit):
    """A run stopped by a signal: exits with 128 + its number. A SystemExit, so that Hydra's job runner and a
    multirun's failure handler let it through and the whole sweep stops."""

    def __init__(self, signum: int, what: str, run_dir: Path, sweep_dir: Path | None, checkpoint: Path | None) -> None:
        super().__init__(128 + signum)
        self.signum, self.what, self.run_dir, self.sweep_dir = signum, what, run_dir, sweep_dir
        self.checkpoint = checkpoint

    def line(self, args: list[str]) -> str:
        """The run's last line: what happened, and the command that goes on from there. A run that kept no checkpoint
        has nothing to continue: it starts again (a sweep's job does so in its dir, kept jobs staying as they are)."""
        if self.sweep_dir is None and self.checkpoint is None:
            return f"{self.what}; the same command starts it again, in a new run dir: {self.restart_command(args)}"
        return f"{self.what}; continue with: {self.continue_command(args)}"

    @staticmethod
    def restart_command(args: list[str]) -> str:
        """`args` again, less a `hydra.run.dir=` (that dir holds the stopped run's files, so a new run refuses it)."""
        kept = (without_password(arg) for arg in args if not arg.startswith("hydra.run.dir="))
        return shlex.join(["python", "-m", "src.train", *kept])

    def continue_command(self, args: list[str]) -> str:
        """The command that continues the run `args` (src.train's arguments) started: a multirun with its sweep dir
        (finished jobs are kept, the rest continue or start), a run with `resume=true` in its own dir. A search's
        database password is left out of it, with where else to give it."""
        shown = [without_password(arg) for arg in args]
        if self.sweep_dir is not None:
            kept = [arg for arg in shown if not arg.startswith("hydra.sweep.dir=")]
            command = shlex.join(["python", "-m", "src.train", *kept, f"hydra.sweep.dir={self.sweep_dir}"])
        else:
            replaced = ("resume=", "ckpt_path=", "hydra.run.dir=")
            kept = [arg for arg in shown if not arg.lstrip("+~").startswith(replaced)]
            command = shlex.join(["python", "-m", "src.train", *kept, "resume=true", f"hydra.run.dir={self.run_dir}"])
        if shown == args:
            return command
        return f"{command} (the storage's password is left out: give it in PGPASSWORD or ~/.pgpass)"


def without_password(arg: str) -> str:
    """A search's storage setting with its database password left out, so that the command still works (libpq reads
    the password from PGPASSWORD or ~/.pgpass); any other argument as it is."""
    key, _, value = arg.partition("=")
    if key.lstrip("+~") != "hydra.sweeper.storage":
        return arg
    runnable = shown(value, runnable=True)
    return arg if runnable == shown(value) else f"{key}={runnable}"  # the same: there is no password to leave out


class StopRequests:
    """While entered: the first stop signal is recorded (`signum`) and passed to Lightning's SIGTERM handler (which
    sets `trainer.received_sigterm`); one that comes before `fit`/`test` has installed that handler is only recorded,
    and `StopWhenRequested` passes it on as the stage starts (before `fit`, the run checks `signum` itself); a
    second SIGINT raises KeyboardInterrupt at once. Lightning composes the SIGTERM handler it installs with the one in
    place when `fit` starts, this one, so a SIGTERM reaches both. On leaving, the previous handlers come back."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        handed_over = [signum for signum in HANDED_OVER if callable(signal.getsignal(signum))]
        # A signal ignored when the run started stays ignored (`nohup`, a shell's background job and SIGINT).
        stop_signals = [signum for signum in STOP_SIGNALS if signal.getsignal(signum) != signal.SIG_IGN]
        for signum in (*stop_signals, *handed_over):
            self._previous[signum] = signal.signal(signum, self._on_sigterm if signum == signal.SIGTERM else self._on)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self.signum is not None and exc[0] is not None:
            # Stopped, and on its way out with all written: a further Ctrl-C would only turn the exit into a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def _on(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # the second Ctrl-C: no waiting for the step to end
            return
        self.signum = signum
        self.pass_on(frame)

    def pass_on(self, frame: FrameType | None = None) -> None:
        """The recorded stop to Lightning's SIGTERM handler, where one is in place (inside fit/test: it calls ours
        too, which changes nothing). `StopWhenRequested` calls it for a stop that came before Lightning's was."""
        lightning = signal.getsignal(signal.SIGTERM)
        if self.signum is not None and callable(lightning) and lightning != self._on_sigterm:
            lightning(self.signum, frame)

    def hand_over(self) -> None:
        """After the clean stop: the handler a launcher had installed for the signal (submitit's checkpoint and
        requeue), if it had one."""
        handler: Callable[[int, FrameType | None], Any] | None = self._previous.get(self.signum)
        if self.signum in HANDED_OVER and callable(handler):
            self.__exit__(None, None, None)
            handler(self.signum, None)
