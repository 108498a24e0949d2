"""MNIST as a LightningDataModule (src.mnist.data) on tiny files: the real loading code (torchvision MNIST over IDX
files), the hold-out split, the tensor pipeline (bit-identical to torchvision's without augmentation, augmenting only
training batches), batches sharded over DDP processes, and the data errors."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from src.core.errors import UserError
from src.mnist.data import BatchAugment, MNISTDataModule, ShardedBatches
from src.mnist.files import OFFICIAL_ARCHIVES
from src.mnist.images import MNIST_MEAN, MNIST_STD
from tests.helpers import (
    TINY_RUN,
    TINY_TEST,
    TINY_TRAIN,
    broken_copy,
    seed_affine_transforms,
    tiny_digits,
    train_in_process,
)


def test_loads_idx_files_and_normalises(tiny_mnist: Path) -> None:
    datamodule = MNISTDataModule(root=str(tiny_mnist), batch_size=16, eval_batch_size=TINY_TEST, pipeline="torchvision")
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.train_set) == TINY_TRAIN
    assert datamodule.val_set is datamodule.test_set  # per-epoch evaluation on the official test set by default
    images, labels = next(iter(datamodule.test_dataloader()))
    raw_images, raw_labels = tiny_digits(TINY_TEST, seed=1)
    expected = (torch.from_numpy(raw_images).float() / 255 - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(images[:, 0], expected)
    assert labels.tolist() == raw_labels.tolist()


@pytest.mark.parametrize("pipeline", ["torchvision", "tensor"])
def test_val_split_holds_training_images_out(tiny_mnist: Path, pipeline: str) -> None:
    datamodule = MNISTDataModule(root=str(tiny_mnist), val_split=50, pipeline=pipeline)
    datamodule.setup("fit")
    assert (len(datamodule.train_set), len(datamodule.val_set)) == (TINY_TRAIN - 50, 50)
    assert not set(datamodule.train_set.indices) & set(datamodule.val_set.indices)
    assert len(list(datamodule.val_dataloader())[0][1]) == 50


def test_held_out_images_are_not_augmented_on_the_torchvision_path(tiny_mnist: Path) -> None:
    flip = torch.nn.Identity()
    datamodule = MNISTDataModule(root=str(tiny_mnist), val_split=50, augmentation=[flip], pipeline="torchvision")
    datamodule.setup("fit")
    assert flip in datamodule.train_set.dataset.transform.transforms
    assert flip not in datamodule.val_set.dataset.transform.transforms


def test_missing_files_without_download_name_the_root(tmp_path: Path) -> None:
    datamodule = MNISTDataModule(root=str(tmp_path), download=False)
    with pytest.raises(UserError, match=rf"not under {tmp_path}/MNIST/raw.*DATA_DIR or data.root"):
        datamodule.prepare_data()


def archives_of_tiny_mnist(tiny_mnist: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The tiny files as the four `.gz` archives a mirror ships, in `folder`, their md5s taken as the official ones."""
    folder.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for raw in sorted((tiny_mnist / "MNIST" / "raw").iterdir()):
        archive = folder / f"{raw.name}.gz"
        archive.write_bytes(gzip.compress(raw.read_bytes(), mtime=0))
        checksums[archive.name] = hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()
        monkeypatch.setitem(OFFICIAL_ARCHIVES, archive.name, checksums[archive.name])
    return checksums


@pytest.mark.parametrize("inside", ["", "MNIST/raw"])
def test_a_folder_of_the_four_gz_archives_is_checked_and_extracted(
    inside: str, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archives = archives_of_tiny_mnist(tiny_mnist, tmp_path / inside, monkeypatch)
    before = {name: (tmp_path / inside / name).read_bytes() for name in archives}
    datamodule = MNISTDataModule(root=str(tmp_path), download=False, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    for raw in (tiny_mnist / "MNIST" / "raw").iterdir():
        assert (tmp_path / "MNIST" / "raw" / raw.name).read_bytes() == raw.read_bytes()
    assert {name: (tmp_path / inside / name).read_bytes() for name in archives} == before, "archives left as they were"
    assert len(datamodule.train_set) == TINY_TRAIN


def test_an_archive_that_is_not_the_official_one_is_refused_and_nothing_is_extracted(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archives = archives_of_tiny_mnist(tiny_mnist, tmp_path, monkeypatch)
    first = sorted(archives)[0]
    (tmp_path / first).write_bytes(gzip.compress(b"something else", mtime=0))
    with pytest.raises(UserError, match=rf"{tmp_path / first} is not the official MNIST archive: md5 [0-9a-f]{{32}}, "
                       rf"expected {archives[first]}"):  # fmt: skip
        MNISTDataModule(root=str(tmp_path), download=False).prepare_data()
    assert not (tmp_path / "MNIST" / "raw" / first.removesuffix(".gz")).exists()


def test_missing_files_name_the_archives_that_were_there(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archives = archives_of_tiny_mnist(tiny_mnist, tmp_path, monkeypatch)
    kept = sorted(archives)[:2]
    for name in sorted(archives)[2:]:
        (tmp_path / name).unlink()
    with pytest.raises(UserError) as refused:
        MNISTDataModule(root=str(tmp_path), download=False).prepare_data()
    message = str(refused.value)
    assert f"of the .gz archives it holds only {tmp_path / kept[0]}, {tmp_path / kept[1]}" in message
    assert "missing train-images-idx3-ubyte, train-labels-idx1-ubyte" in message  # the two not given


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "mnist.txt"
    not_a_folder.write_text("")
    with pytest.raises(UserError, match="is a file"):
        MNISTDataModule(root=str(not_a_folder)).prepare_data()


@pytest.mark.parametrize(("key", "value"), [("batch_size", 0), ("eval_batch_size", -1), ("val_split", 60_000)])
def test_bad_sizes_are_refused(tmp_path: Path, key: str, value: int) -> None:
    with pytest.raises(UserError, match=f"{key}={value}"):
        MNISTDataModule(root=str(tmp_path), **{key: value})


def tensor_batch(datamodule: MNISTDataModule, dataset, indices: list[int]) -> torch.Tensor:
    return datamodule.on_after_batch_transfer(dataset[indices], 0)[0]


@pytest.mark.parametrize("train", [True, False])
def test_without_augmentation_both_pipelines_give_identical_batches(tiny_mnist: Path, train: bool) -> None:
    pipelines = {}
    for pipeline in ("torchvision", "tensor"):
        datamodule = MNISTDataModule(root=str(tiny_mnist), pipeline=pipeline)
        datamodule.setup("fit")
        pipelines[pipeline] = (datamodule, datamodule.train_set if train else datamodule.test_set)
    indices = [5, 0, 17, 63, 2, 99]
    expected = torch.stack([pipelines["torchvision"][1][i][0] for i in indices])
    assert torch.equal(tensor_batch(*pipelines["tensor"], indices), expected)
    labels = pipelines["tensor"][1][indices][1]
    assert labels.tolist() == [pipelines["torchvision"][1][i][1] for i in indices]


def test_tensor_loader_yields_whole_shuffled_batches(tiny_mnist: Path) -> None:
    datamodule = MNISTDataModule(root=str(tiny_mnist), batch_size=64, pipeline="tensor")
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert [len(labels) for _, labels in batches] == [64] * (TINY_TRAIN // 64)
    seen = torch.cat([labels for _, labels in batches])
    assert sorted(seen.tolist()) == sorted(datamodule.train_set.tensors[1].tolist())
    assert seen.tolist() != datamodule.train_set.tensors[1][: len(seen)].tolist(), "shuffled, not in file order"
    again = torch.cat([labels for _, labels in datamodule.train_dataloader()])
    assert again.tolist() != seen.tolist(), "each epoch in another order"


def test_tensor_pipeline_augments_only_training_batches(tiny_mnist: Path) -> None:
    augmented = MNISTDataModule(root=str(tiny_mnist), augmentation=seed_affine_transforms(), pipeline="tensor")
    plain = MNISTDataModule(root=str(tiny_mnist), pipeline="tensor")
    for datamodule in (augmented, plain):
        datamodule.setup("fit")
    indices = list(range(32))
    # Outside trainer.fit's training loop (evaluation, test, no trainer) the batch is only normalised.
    assert torch.equal(tensor_batch(augmented, augmented.val_set, indices), tensor_batch(plain, plain.val_set, indices))
    images = augmented.val_set[indices][0].unsqueeze(1).float().div(255)
    assert not torch.equal(augmented.batch_augment(images), images)


def test_the_last_epochs_train_on_unaugmented_digits(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real 3-epoch run of 2 batches each with data.unaugmented_last_epochs=1: the augmentation warps the batches
    of the first two epochs only, and validation batches never."""
    epoch_of_batch, augmented_in_epochs = [], []
    transfer, augment = MNISTDataModule.on_after_batch_transfer, BatchAugment.forward

    def noting_epoch(self: MNISTDataModule, batch, dataloader_idx: int):
        epoch_of_batch[:] = [self.trainer.current_epoch]
        return transfer(self, batch, dataloader_idx)

    def recording_augment(self: BatchAugment, images: torch.Tensor) -> torch.Tensor:
        augmented_in_epochs.extend(epoch_of_batch)
        return augment(self, images)

    monkeypatch.setattr(MNISTDataModule, "on_after_batch_transfer", noting_epoch)
    monkeypatch.setattr(BatchAugment, "forward", recording_augment)
    overrides = ("model=tiny", *TINY_RUN, "trainer.max_epochs=3", "trainer.limit_train_batches=2", "logger=none")
    train_in_process(*overrides, "data.unaugmented_last_epochs=1", run_dir=tmp_path, data_dir=tiny_mnist)
    assert augmented_in_epochs == [0, 0, 1, 1]


def test_unaugmented_epochs_are_refused_where_they_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^data.unaugmented_last_epochs=-1 must be >= 0$"):
        MNISTDataModule(root=str(tmp_path), unaugmented_last_epochs=-1)
    with pytest.raises(UserError, match="data.unaugmented_last_epochs=2 needs data.pipeline=tensor"):
        MNISTDataModule(root=str(tmp_path), unaugmented_last_epochs=2, pipeline="torchvision")


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (
            lambda data: b"\x00\x00\x08\x01" + data[4:],
            "is not an MNIST IDX file: magic number 0x00000801, expected 0x00000803",
        ),
        (lambda data: data[:-100], "is truncated or corrupt"),
        (lambda data: b"", "is not an MNIST IDX file: magic number none (file too short)"),
    ],
)
def test_corrupt_idx_files_are_named_in_one_line(tiny_mnist: Path, tmp_path: Path, mangle, message: str) -> None:
    name = "train-images-idx3-ubyte"
    root = broken_copy(tiny_mnist, tmp_path, name, mangle((tiny_mnist / "MNIST" / "raw" / name).read_bytes()))
    with pytest.raises(UserError) as raised:
        MNISTDataModule(root=str(root), download=False).prepare_data()
    assert str(raised.value).startswith(f"{root.resolve()}/MNIST/raw/{name} ")
    assert message in str(raised.value)


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
def test_sharded_batches_give_each_process_its_share_of_every_global_batch(processes: int, shuffle: bool) -> None:
    size, batch_size = 103, 10
    per_rank = [list(ShardedBatches(range(size), batch_size, shuffle, seed=7, processes=processes, rank=rank))
                for rank in range(processes)]  # fmt: skip
    assert len({len(batches) for batches in per_rank}) == 1, "every process must take the same number of steps"
    global_batches = [sum(parts, []) for parts in zip(*per_rank, strict=True)]
    assert all(len(part) > 0 for batches in per_rank for part in batches)
    assert all(len(batch) == batch_size for batch in global_batches[:-1])
    seen = [index for batch in global_batches for index in batch]
    if shuffle:  # the last global batch (3 images) is kept: it has at least one image per process
        assert sorted(seen) == list(range(size)) and seen != list(range(size))
    else:  # evaluation: every image exactly once, in order, no padding
        assert seen == list(range(size))


def test_sharded_batches_drop_a_last_batch_too_small_to_share_in_training() -> None:
    sampler = ShardedBatches(range(21), 10, shuffle=True, seed=0, processes=2, rank=1)
    assert len(sampler) == 2 and len(list(sampler)) == 2
    sampler.set_epoch(1)
    assert list(sampler) != list(ShardedBatches(range(21), 10, shuffle=True, seed=0, processes=2, rank=1))
