"""MNIST as a LightningDataModule: the files, the optional validation hold-out, and the training augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms
from torchvision.datasets import MNIST

from src import UserError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
TRAIN_SIZE = 60_000
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def missing_raw_files(root: Path) -> list[str]:
    """The MNIST files torchvision needs that are not under `root/MNIST/raw`."""
    return [name for name in RAW_FILES if not (root / "MNIST" / "raw" / name).is_file()]


class MNISTDataModule(pl.LightningDataModule):
    """Official 60k/10k MNIST; per-epoch evaluation on the official test set unless `val_split` holds images out.

    The write-ups report test accuracy after every epoch, so by default the "val" loader *is* the 10k test set.
    `val_split=N` instead holds N training images out (a fixed split, drawn with `split_seed`) so that choices can
    be made without looking at the test set. `test` is always the official test set.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_split: int = 0,
        split_seed: int = 0,
        num_workers: int = 0,
        download: bool = True,
        augmentation: Sequence[torch.nn.Module] = (),
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise UserError(
                f"data.batch_size={batch_size} and data.eval_batch_size={eval_batch_size} must both be >= 1"
            )
        if not 0 <= val_split < TRAIN_SIZE:
            raise UserError(f"data.val_split={val_split} must be between 0 and {TRAIN_SIZE - 1} training images")
        self.root = Path(root).expanduser().resolve()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_split = val_split
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.download = download
        normalise = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
        self.train_transform = transforms.Compose([*augmentation, *normalise])
        self.eval_transform = transforms.Compose(normalise)

    def prepare_data(self) -> None:
        """Use the files if present; otherwise download them, or stop with one line saying how to provide them."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"data.root={self.root} is a file; it must be a folder holding MNIST/raw/")
        missing = missing_raw_files(self.root)
        if not missing:
            return
        hint = (
            f"MNIST is not under {self.root}/MNIST/raw (missing {', '.join(missing)}); set DATA_DIR or data.root "
            "to a folder holding MNIST/raw/ with the four *-ubyte files"
        )
        if not self.download:
            raise UserError(f"{hint} (data.download=false)")
        try:
            MNIST(self.root, train=True, download=True)
            MNIST(self.root, train=False, download=True)
        except (OSError, RuntimeError) as error:
            reason = str(error).splitlines()[0].rstrip(":")
            raise UserError(f"{hint}, or run once with network access (download failed: {reason})") from error

    def setup(self, stage: str | None = None) -> None:
        self.test_set = MNIST(self.root, train=False, transform=self.eval_transform)
        if stage == "test":
            return
        train_set = MNIST(self.root, train=True, transform=self.train_transform)
        if self.val_split == 0:
            self.train_set, self.val_set = train_set, self.test_set
            return
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        held_out = MNIST(self.root, train=True, transform=self.eval_transform)
        self.train_set = Subset(train_set, order[self.val_split :])
        self.val_set = Subset(held_out, order[: self.val_split])

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)
