"""What the held-out scripts share: their command line and the held-out split they evaluate on.

Not a script: `heldout_error_profile.py`, `heldout_shift_sets.py` and `heldout_test_time_views.py` import it (run
them as `python scripts/NAME.py ...`, which puts this folder on the import path).
"""

from __future__ import annotations

import argparse
import os

import torch

from src.mnist.data import MNISTDataModule


def parser(description: str, several: bool = True) -> argparse.ArgumentParser:
    """CKPT (or CKPT...), --data-root (DATA_DIR, else data/, as a run reads it) and --val-split (the runs' split)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("ckpts", nargs="+" if several else 1, metavar="CKPT", help="RUN/checkpoints/last.ckpt")
    parser.add_argument("--data-root", default=os.environ.get("DATA_DIR", "data"), help="holds MNIST/raw/")
    parser.add_argument(
        "--val-split", type=int, default=10000, help="the held-out images, as the runs' data.val_split (same seed)"
    )
    return parser


def held_out_data(args: argparse.Namespace) -> MNISTDataModule:
    """The datamodule of a run trained with data.val_split=args.val_split (the default data.split_seed, 0)."""
    datamodule = MNISTDataModule(root=args.data_root, val_split=args.val_split, eval_batch_size=1000)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def held_out_batches(datamodule: MNISTDataModule) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The held-out images as the net sees them (normalised batches) and their labels."""
    batches = [datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.val_dataloader()]
    return [images for images, _ in batches], torch.cat([labels for _, labels in batches])
