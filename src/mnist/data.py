"""MNIST as a LightningDataModule: the loaders over the files (`src.mnist.files`), the optional validation hold-out,
and the training augmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence
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
from src.mnist.augment import BatchAugment
from src.mnist.files import TRAIN_SIZE, prepare_files, read_digits, split_order
from src.mnist.images import MNIST_MEAN, MNIST_STD

PIPELINES = ("tensor", "torchvision")


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
        """The files checked (extracted or downloaded where missing), or one line saying how to provide them."""
        prepare_files(self.root, self.download)

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
        order = split_order(len(train_set), self.split_seed)
        held_out = self._dataset(train=True, augment=False) if self.pipeline == "torchvision" else train_set
        self.train_set = Subset(train_set, order[self.val_split :])
        self.val_set = Subset(held_out, order[: self.val_split])

    def _dataset(self, train: bool, augment: bool) -> Dataset:
        """torchvision: PIL images through per-sample transforms. tensor: the uint8 images and labels as two
        tensors on the training device, indexed a whole batch at a time."""
        if self.pipeline == "torchvision":
            return MNIST(self.root, train=train, transform=self.train_transform if augment else self.eval_transform)
        images, labels = read_digits(self.root, train)
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        return TensorDataset(images.to(device), labels.to(device))

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
