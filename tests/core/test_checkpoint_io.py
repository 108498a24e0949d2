"""Lightning's checkpoint writer (src.core.checkpoint_io): a crash never leaves half a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.core.checkpoint_io import AtomicCheckpointIO

ALLOWED = frozenset({"torch.nn.Linear"})


def test_checkpoints_are_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO(ALLOWED)
    io.save_checkpoint({"weights": torch.ones(3)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"weights": torch.zeros(3), "broken": Unpicklable()}, target)
    assert torch.equal(torch.load(target)["weights"], torch.ones(3)), "the previous checkpoint is intact"
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"], "no partial file is left behind"
