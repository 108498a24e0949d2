"""Lightning's side of checkpoints: written so that a crash mid-save keeps the old file, read back through
`src.core.checkpoint.load_checkpoint`'s checks when a run resumes."""

from __future__ import annotations

from collections.abc import Set
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from src.core.checkpoint import load_checkpoint
from src.core.files import replaced_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through `replaced_atomically` (Lightning writes the target file directly), read back through
    `load_checkpoint`'s checks when a run resumes."""

    def __init__(self, allowed_targets: Set[str]) -> None:
        self.allowed_targets = allowed_targets

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(target) as partial:
            super().save_checkpoint(checkpoint, partial, storage_options)

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, self.allowed_targets)
