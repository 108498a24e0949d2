"""Checkpoints that survive crashes and carry what is needed to rebuild their model anywhere (eval, predict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from src.core.errors import UserError
from src.core.files import replaced_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through `replaced_atomically` (Lightning writes the target file directly)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(target) as partial:
            super().save_checkpoint(checkpoint, partial, storage_options)


class RunConfigInCheckpoint(pl.Callback):
    """Stores the resolved `model` config, recipe and seed in every checkpoint, so that `src.eval` and
    `src.predict` rebuild the net from the checkpoint alone (no run dir, no matching overrides needed)."""

    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["run_config"] = self.run_config


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint on the CPU (whatever device saved it), or one line saying why it cannot be read.

    `weights_only=False`: the checkpoint holds the RNG states and config next to the tensors; load only
    checkpoints you trust, as with any pickle."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt_path={path} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a non-checkpoint file
        raise UserError(f"ckpt_path={path} is not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"ckpt_path={path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def check_fits(model: pl.LightningModule, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Loads the checkpoint's weights, or says in one line which net it holds (not a size-mismatch traceback)."""
    shapes = {name: tuple(value.shape) for name, value in checkpoint["state_dict"].items()}
    if shapes == {name: tuple(value.shape) for name, value in model.state_dict().items()}:
        model.load_state_dict(checkpoint["state_dict"])
        return
    saved = checkpoint.get("run_config")
    if saved:
        net = saved["model"]["net"]["_target_"].rsplit(".", 1)[-1]
        holds = f"holds recipe {saved['recipe']}'s {net}; use model={saved['recipe']}"
    else:
        holds = "holds weights of another net"
    raise UserError(f"ckpt_path={path} does not fit this run's {type(model.net).__name__}: it {holds}")


def model_from_checkpoint(path: str | Path) -> tuple[pl.LightningModule, dict[str, Any]]:
    """The trained model (eval mode) and the checkpoint it came from."""
    checkpoint = load_checkpoint(path)
    run_config = checkpoint.get("run_config")
    if run_config is None:
        raise UserError(f"ckpt_path={path} has no run_config: it was not written by src.train, so its net is unknown")
    model = instantiate(run_config["model"])
    check_fits(model, checkpoint, path)
    return model.eval(), checkpoint
