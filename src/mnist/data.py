"""MNIST as a LightningDataModule: the files, the optional validation hold-out, and the training augmentation."""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
)
from torchvision import transforms
from torchvision.datasets import MNIST

from src.core.errors import UserError
from src.core.files import replaced_atomically
from src.mnist.augment import BatchAugment
from src.mnist.images import MNIST_MEAN, MNIST_STD

TRAIN_SIZE = 60_000
PIPELINES = ("tensor", "torchvision")
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


OFFICIAL_ARCHIVES = dict(MNIST.resources)  # `<raw file>.gz` → its md5, as most mirrors ship MNIST


def missing_raw_files(root: Path) -> list[str]:
    """The MNIST files torchvision needs that are not under `root/MNIST/raw`."""
    return [name for name in RAW_FILES if not (root / "MNIST" / "raw" / name).is_file()]


def archives_of(root: Path, names: Sequence[str]) -> dict[str, Path]:
    """Each raw file's `.gz` where one is, in `root/MNIST/raw` or in `root` itself (a folder of the four archives)."""
    found = {}
    for name in names:
        for folder in (root / "MNIST" / "raw", root):
            if (folder / f"{name}.gz").is_file():
                found[name] = folder / f"{name}.gz"
                break
    return found


def extract_archives(root: Path, checksums: Mapping[str, str] = OFFICIAL_ARCHIVES) -> None:
    """The missing raw files from their `.gz` archives, each checked against its md5 first, written into
    `root/MNIST/raw` as new files (nothing there is replaced)."""
    raw = root / "MNIST" / "raw"
    for name, archive in archives_of(root, missing_raw_files(root)).items():
        digest = hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()
        if digest != checksums[archive.name]:
            raise UserError(
                f"{archive} is not the official MNIST archive: md5 {digest}, expected {checksums[archive.name]}"
            )
        raw.mkdir(parents=True, exist_ok=True)
        try:
            with gzip.open(archive) as source, replaced_atomically(raw / name) as partial:
                partial.write_bytes(source.read())
        except (OSError, EOFError) as error:
            raise UserError(f"{archive} cannot be extracted into {raw} ({error})") from None


def idx_shape(path: Path) -> tuple[int, ...]:
    """The shape an MNIST IDX file declares, after checking its magic number and length (torchvision would fail
    deep inside with an assertion, or read a truncated file as garbage)."""
    dims = 3 if "images" in path.name else 1
    with path.open("rb") as handle:
        header = handle.read(4 + 4 * dims)
    expected_magic = 0x0800 + dims
    magic = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if magic != expected_magic:
        found = "none (file too short)" if magic is None else f"0x{magic:08x}"
        raise UserError(f"{path} is not an MNIST IDX file: magic number {found}, expected 0x{expected_magic:08x}")
    shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected_size = len(header) + math.prod(shape)
    if len(header) < 4 + 4 * dims or path.stat().st_size != expected_size:
        raise UserError(
            f"{path} is truncated or corrupt: {path.stat().st_size:,} bytes, its header {shape} needs {expected_size:,}"
        )
    return shape


def check_raw_files(raw: Path) -> None:
    """Magic numbers, lengths, and as many labels as images in each split."""
    for split in ("train", "t10k"):
        images, labels = idx_shape(raw / f"{split}-images-idx3-ubyte"), idx_shape(raw / f"{split}-labels-idx1-ubyte")
        if images[0] != labels[0]:
            raise UserError(f"{raw}/{split}-*-ubyte disagree: {images[0]:,} images but {labels[0]:,} labels")


class ShardedBatches(DistributedSampler):
    """The tensor pipeline's batches under DDP: every process walks the same order of global batches (drawn from
    `seed` and the epoch) and takes its share of each, so N processes together train on exactly the batches of
    `data.batch_size` that one process would draw, and evaluation sees every image once, without padding. (A
    DistributedSampler, so that Lightning does not shard it a second time.)"""

    def __init__(
        self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int, processes: int | None = None,
        rank: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(dataset, num_replicas=processes, rank=rank, shuffle=shuffle, seed=seed)  # None: from DDP
        self.batch_size = batch_size
        self.size = len(dataset)

    def __len__(self) -> int:
        batches = math.ceil(self.size / self.batch_size)
        return batches - 1 if self._drops_last_batch() else batches

    def _drops_last_batch(self) -> bool:
        """In training every process needs an image of every batch (DDP steps together; BatchNorm needs data)."""
        return self.shuffle and 0 < self.size % self.batch_size < self.num_replicas

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        batches = order.split(self.batch_size)[: len(self)]
        return iter([batch.tensor_split(self.num_replicas)[self.rank].tolist() for batch in batches])


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
        pipeline: str = "tensor",
        unaugmented_last_epochs: int = 0,
    ) -> None:
        super().__init__()
        if pipeline not in PIPELINES:
            raise UserError(f"data.pipeline={pipeline!r} is not one of {', '.join(PIPELINES)}")
        if batch_size < 1 or eval_batch_size < 1:
            raise UserError(
                f"data.batch_size={batch_size} and data.eval_batch_size={eval_batch_size} must both be >= 1"
            )
        if not 0 <= val_split < TRAIN_SIZE:
            raise UserError(f"data.val_split={val_split} must be between 0 and {TRAIN_SIZE - 1} training images")
        if unaugmented_last_epochs < 0:
            raise UserError(f"data.unaugmented_last_epochs={unaugmented_last_epochs} must be >= 0")
        if unaugmented_last_epochs and pipeline != "tensor":
            raise UserError(
                f"data.unaugmented_last_epochs={unaugmented_last_epochs} needs data.pipeline=tensor (the torchvision "
                "pipeline's loader workers keep their transforms for the whole run); set data.unaugmented_last_epochs=0"
                " to use the torchvision pipeline"
            )
        self.root = Path(root).expanduser().resolve()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_split = val_split
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.download = download
        self.pipeline = pipeline
        self.unaugmented_last_epochs = unaugmented_last_epochs
        self.batch_augment = BatchAugment(augmentation) if pipeline == "tensor" else None
        normalise = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
        self.train_transform = transforms.Compose([*augmentation, *normalise])
        self.eval_transform = transforms.Compose(normalise)

    def prepare_data(self) -> None:
        """Use the files if present; otherwise download them, or stop with one line saying how to provide them."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"data.root={self.root} is a file; it must be a folder holding MNIST/raw/")
        extract_archives(self.root)
        missing = missing_raw_files(self.root)
        if not missing:
            check_raw_files(self.root / "MNIST" / "raw")
            return
        archives = archives_of(self.root, RAW_FILES)
        seen = f"; of the .gz archives it holds only {', '.join(map(str, archives.values()))}" if archives else ""
        hint = (
            f"MNIST is not under {self.root}/MNIST/raw (missing {', '.join(missing)}{seen}); set DATA_DIR or "
            "data.root to a folder holding MNIST/raw/ with the four *-ubyte files or their four .gz archives"
        )
        if not self.download:
            raise UserError(f"{hint} (data.download=false)")
        try:
            MNIST(self.root, train=True, download=True)
            MNIST(self.root, train=False, download=True)
        except (OSError, RuntimeError) as error:
            reason = str(error).splitlines()[0].rstrip(":")
            raise UserError(f"{hint}, or run once with network access (download failed: {reason})") from error

    def check_split(self, processes: int) -> None:
        """Under DDP the batch sizes stay global: each of the N processes loads 1/N of every batch. Called before
        the processes start, so that the error is printed once."""
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) % processes:
                raise UserError(
                    f"data.{key}={getattr(self, key)} does not split evenly over {processes} processes; "
                    f"use a multiple of {processes}"
                )

    def setup(self, stage: str | None = None) -> None:
        self.test_set = self._dataset(train=False, augment=False)
        if stage == "test":
            return
        train_set = self._dataset(train=True, augment=True)
        if self.val_split == 0:
            self.train_set, self.val_set = train_set, self.test_set
            return
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        held_out = self._dataset(train=True, augment=False) if self.pipeline == "torchvision" else train_set
        self.train_set = Subset(train_set, order[self.val_split :])
        self.val_set = Subset(held_out, order[: self.val_split])

    def _dataset(self, train: bool, augment: bool) -> Dataset:
        """torchvision: PIL images through per-sample transforms. tensor: the uint8 images and labels as two
        tensors on the training device, indexed a whole batch at a time."""
        if self.pipeline == "torchvision":
            return MNIST(self.root, train=train, transform=self.train_transform if augment else self.eval_transform)
        raw = MNIST(self.root, train=train)
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        return TensorDataset(raw.data.to(device), raw.targets.to(device))

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        """`batch_size` is the global batch; under DDP each of the processes loads its share of it."""
        processes = self.trainer.world_size if self.trainer else 1
        if self.pipeline == "tensor":  # one index list per batch: the dataset returns the whole batch at once
            if processes > 1:
                batches = ShardedBatches(dataset, batch_size, shuffle, seed=torch.initial_seed())
            else:
                order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
                batches = BatchSampler(order, batch_size, drop_last=False)
            return DataLoader(dataset, batch_size=None, sampler=batches)
        return DataLoader(  # under DDP, Lightning's DistributedSampler gives each process its share of the images
            dataset,
            batch_size=batch_size // processes,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """tensor pipeline, on the training device: to float as ToTensor does, augment (training only), normalise
        as Normalize does, so that without augmentation the batch is bit-identical to the torchvision path's."""
        if self.pipeline != "tensor":
            return batch
        images, labels = batch
        images = images.unsqueeze(1).float().div(255)
        if self.trainer is not None and self.trainer.training and self._augments_this_epoch():
            images = self.batch_augment(images)
        return images.sub_(MNIST_MEAN).div_(MNIST_STD), labels

    def _augments_this_epoch(self) -> bool:
        """False in the last `unaugmented_last_epochs` epochs of training: a net too small to fit the warped digits
        well ends on the plain ones that evaluation shows it."""
        if not self.unaugmented_last_epochs:
            return True
        return self.trainer.current_epoch < self.trainer.max_epochs - self.unaugmented_last_epochs

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)
