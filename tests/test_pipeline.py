"""The tensor pipeline: bit-identical to torchvision without augmentation, same augmentation distributions with it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms.functional import _get_inverse_affine_matrix

from src.core.errors import UserError
from src.mnist.data import BatchAugment, MNISTDataModule
from tests.conftest import SEED_AFFINE, TINY_RUN, TINY_TRAIN, noise, train_in_process

NEAREST = InterpolationMode.NEAREST


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


def torchvision_warp_samples(n: int) -> dict[str, np.ndarray]:
    rotation, affine = SEED_AFFINE[0], SEED_AFFINE[1]
    angles, shift_x, shift_y, scales = [], [], [], []
    for _ in range(n):
        rotation_angle = rotation.get_params(rotation.degrees)
        angle, (tx, ty), scale, _ = affine.get_params(affine.degrees, affine.translate, affine.scale, None, [28, 28])
        angles.append(rotation_angle + angle)
        shift_x.append(tx)
        shift_y.append(ty)
        scales.append(scale)
    return {
        "angle": np.array(angles),
        "shift_x": np.array(shift_x),
        "shift_y": np.array(shift_y),
        "scale": np.array(scales),
    }


def test_warp_parameters_follow_the_torchvision_distributions() -> None:
    torch.manual_seed(0)
    ours = {k: v.numpy() for k, v in BatchAugment(SEED_AFFINE).sample_warp(20_000, 28, 28, torch.device("cpu")).items()}
    theirs = torchvision_warp_samples(20_000)
    for name in ("angle", "scale"):
        assert stats.ks_2samp(ours[name], theirs[name]).pvalue > 1e-3, name
    for name in ("shift_x", "shift_y"):  # integer pixels, -4..4 as torchvision rounds them
        values = np.arange(-4, 5)
        counts = np.array([[np.sum(sample[name] == v) for v in values] for sample in (ours, theirs)])
        assert counts.sum() == 40_000
        assert stats.chi2_contingency(counts).pvalue > 1e-3, name


def rounding_ties(angle: float, shift: tuple[float, float], scale: float, side: int = 28) -> np.ndarray:
    """Output pixels whose source position lies within 1e-4 px of halfway between two input pixels (or of the
    image's edge). Nearest-neighbour takes the pixel the position rounds to; at exactly halfway the two float32
    computations of that position (ours through affine_grid, torchvision's through its own grid) may round to
    different neighbours, and both are right. The position is computed here in float64, from torchvision's own
    inverse map, in its convention: pixel centres at -13.5..13.5 about the image centre."""
    matrix = np.array(_get_inverse_affine_matrix([0.0, 0.0], angle, list(shift), scale, [0.0, 0.0])).reshape(2, 3)
    centred = np.arange(side) - (side - 1) / 2
    xs, ys = np.meshgrid(centred, centred)
    ties = np.zeros((side, side), dtype=bool)
    for row in matrix:
        source = row[0] * xs + row[1] * ys + row[2] + (side - 1) / 2  # the input pixel index, before rounding
        ties |= np.abs(source - np.floor(source) - 0.5) < 1e-4
    return ties


@pytest.mark.parametrize(
    ("angle", "shift", "scale", "ties_expected"),
    [
        (0.0, (3, -2), 1.0, 0),  # whole-pixel shifts land on pixel centres: no ties
        (7.0, (0, 0), 1.0, 4),
        (-11.0, (2, 1), 0.9, 0),
        (90.0, (0, 0), 1.0, 0),
        (0.0, (0, 0), 1.1, 108),  # x / 1.1 is halfway for x = ±5.5: two whole columns and two whole rows
    ],
)
def test_one_warp_matches_torchvision_affine(
    angle: float, shift: tuple[int, int], scale: float, ties_expected: int
) -> None:
    image = noise(1, seed=int(angle) + 100)
    ours = BatchAugment([]).warp(
        image, torch.tensor([angle]), torch.tensor([float(shift[0])]), torch.tensor([float(shift[1])]),
        torch.tensor([scale]),
    )  # fmt: skip
    theirs = TF.affine(image, angle, list(shift), scale, [0.0, 0.0], interpolation=InterpolationMode.NEAREST)
    ties = rounding_ties(angle, shift, scale)
    same = (ours == theirs)[0, 0].numpy()
    assert same[~ties].all(), f"{(~same & ~ties).sum()} pixels differ away from any rounding tie"
    assert ties.sum() == ties_expected  # the exemption is only what the geometry puts at exactly halfway
    assert (theirs == 0).float().mean() < 0.3, "the comparison must be over content, not over the black fill"


def test_a_batch_warps_each_image_with_its_own_parameters() -> None:
    torch.manual_seed(3)
    images = noise(16, seed=4)
    params = BatchAugment(SEED_AFFINE).sample_warp(16, 28, 28, torch.device("cpu"))
    ours = BatchAugment([]).warp(images, **params)
    for index in range(16):
        angle, scale = params["angle"][index].item(), params["scale"][index].item()
        shift = (params["shift_x"][index].item(), params["shift_y"][index].item())
        theirs = TF.affine(images[index], angle, list(shift), scale, [0.0, 0.0], interpolation=NEAREST)
        same = (ours[index] == theirs)[0].numpy()
        assert same[~rounding_ties(angle, shift, scale)].all(), index


def test_brightness_and_contrast_factors_stay_in_their_ranges() -> None:
    torch.manual_seed(0)
    images = torch.rand(4000, 1, 28, 28) * 0.5 + 0.25
    brightness = BatchAugment([transforms.ColorJitter(brightness=0.1)])(images)
    ratio = (brightness / images).flatten(1).mean(1)
    assert ratio.min() >= 0.9 - 1e-6 and ratio.max() <= 1.1 + 1e-6
    assert stats.kstest(ratio.numpy(), stats.uniform(0.9, 0.2).cdf).pvalue > 1e-3
    contrast = BatchAugment([transforms.ColorJitter(contrast=0.1)])(images)
    spread = contrast.flatten(1).std(1) / images.flatten(1).std(1)
    assert stats.kstest(spread.numpy(), stats.uniform(0.9, 0.2).cdf).pvalue > 1e-3


def test_unsupported_transforms_and_pipelines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot batch RandomErasing"):
        BatchAugment([transforms.RandomErasing()])
    # Settings the batched warp would otherwise ignore: refused, not warped another way.
    with pytest.raises(UserError, match=r"cannot batch RandomAffine with fill=\[255\]; it warps with the defaults"):
        BatchAugment([transforms.RandomAffine(5, fill=[255])])
    bilinear = transforms.InterpolationMode.BILINEAR
    with pytest.raises(UserError, match="cannot batch RandomRotation with interpolation=InterpolationMode.BILINEAR"):
        BatchAugment([transforms.RandomRotation(5, interpolation=bilinear)])
    with pytest.raises(UserError, match="cannot batch two RandomAffine steps"):
        BatchAugment([transforms.RandomAffine(5, translate=(0.1, 0.1)), transforms.RandomAffine(0, scale=(0.9, 1.1))])
    with pytest.raises(UserError, match="data.pipeline='dali' is not one of tensor, torchvision"):
        MNISTDataModule(root=str(tmp_path), pipeline="dali")


def test_tensor_pipeline_augments_only_training_batches(tiny_mnist: Path) -> None:
    augmented = MNISTDataModule(root=str(tiny_mnist), augmentation=SEED_AFFINE, pipeline="tensor")
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
