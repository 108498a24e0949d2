"""A run's console shows the user's run: known library noise that is not about it is filtered, narrowly, by
message and source; the progress bar only draws where someone watches a terminal."""

from __future__ import annotations

import logging
import sys
import warnings

# Lightning calls torch's deprecated LeafSpec() on every step's outputs (fixed upstream, not in our pinned release).
DEPRECATIONS = [(r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\.utilities\._pytree")]
# Advertisements for Lightning's cloud products, printed at every Trainer start.
TIPS = ("💡 Tip: For seamless cloud",)
LIGHTNING_INFO = "pytorch_lightning.utilities.rank_zero"


class DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIPS)


def quiet_known_noise() -> None:
    """Idempotent; called by the entry points before anything imports Lightning's trainer."""
    for message, module in DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, module=module)
    info = logging.getLogger(LIGHTNING_INFO)
    if not any(isinstance(existing, DropTips) for existing in info.filters):
        info.addFilter(DropTips())


def stderr_is_terminal() -> bool:
    """`trainer.enable_progress_bar`'s default: a progress bar redraws a line in place, which under nohup, CI or a
    pipe becomes one line per redraw (13,419 lines for one `fast` run); EpochLog's line per epoch stays."""
    return sys.stderr.isatty()
