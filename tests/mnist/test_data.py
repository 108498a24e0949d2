"""The real loading code (torchvision MNIST over IDX files) on tiny files, the hold-out split and the data errors."""

from pathlib import Path

import pytest
import torch

from src.core.errors import UserError
from src.mnist.data import MNIST_MEAN, MNIST_STD, MNISTDataModule
from tests.conftest import TINY_TEST, TINY_TRAIN, tiny_digits


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


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "mnist.txt"
    not_a_folder.write_text("")
    with pytest.raises(UserError, match="is a file"):
        MNISTDataModule(root=str(not_a_folder)).prepare_data()


@pytest.mark.parametrize(("key", "value"), [("batch_size", 0), ("eval_batch_size", -1), ("val_split", 60_000)])
def test_bad_sizes_are_refused(tmp_path: Path, key: str, value: int) -> None:
    with pytest.raises(UserError, match=f"{key}={value}"):
        MNISTDataModule(root=str(tmp_path), **{key: value})
