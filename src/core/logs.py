"""A run's console shows the user's run: known library noise that is not about it is filtered, narrowly, by
message and source; the progress bar only draws where someone watches a terminal."""

from __future__ import annotations

import logging
import sys
import warnings

# Warnings (message, source module) that are not about the user's run: Lightning calls torch's deprecated LeafSpec()
# on every step's outputs (fixed upstream, not in our pinned release); its model summary says it counts a
# mixed-precision model's bytes at 32 bits, which is what mixed precision stores the weights in (the default on CPUs
# with native bf16 and on GPUs), so the size it prints is right.
IRRELEVANT_WARNINGS = [
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\.utilities\._pytree"),
    (
        r"Precision (bf16|16)-mixed is not supported by the model summary",
        r"pytorch_lightning\.utilities\.model_summary",
    ),
]
# Lightning's note that a checkpoint dir is not empty: filtered only where a run continues in its own dir (resume).
OWN_CHECKPOINT_DIR = (
    r"Checkpoint directory .* exists and is not empty",
    r"pytorch_lightning\.callbacks\.model_checkpoint",
)
# Logger → the starts of its messages that are not about the user's run: advertisements for Lightning's cloud
# products at every Trainer start, and torch.compile's note that a CPU-only machine has no CUDA runtime.
NOISE = {
    "pytorch_lightning.utilities.rank_zero": ("💡 Tip: For seamless cloud",),
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
}


class DropNoise(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_known_noise() -> None:
    """Idempotent; called by the entry points before anything imports Lightning's trainer or compiles."""
    for message, module in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name, starts in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, DropNoise) for existing in logger.filters):
            logger.addFilter(DropNoise(starts))


def stderr_is_terminal() -> bool:
    """`trainer.enable_progress_bar`'s default: a progress bar redraws a line in place, which under nohup, CI or a
    pipe becomes one line per redraw (13,419 lines for one `fast` run); EpochLog's line per epoch stays."""
    return sys.stderr.isatty()
