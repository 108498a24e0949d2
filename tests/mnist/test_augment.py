"""Training augmentation as batched tensor ops (src.mnist.augment): the same distributions as torchvision's per-image
transforms, the warp pixel for pixel, elastic distortion with one field per sample, and what cannot be batched."""

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy import stats
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms.functional import _get_inverse_affine_matrix

from src.core.errors import UserError
from src.mnist.augment import BatchAugment, BatchElastic
from src.mnist.data import MNISTDataModule
from tests.helpers import compose_train, noise, seed_affine_transforms

CPU = torch.device("cpu")
NEAREST = InterpolationMode.NEAREST
ELASTIC = list(instantiate(compose_train("augmentation=elastic").augmentation.transforms))
AFFINE, ELASTIC_TRANSFORM = ELASTIC


def torchvision_fields(transform: transforms.ElasticTransform, n: int, height: int, width: int) -> torch.Tensor:
    """n displacement fields as ElasticTransform draws them, one get_params call each: (n, H, W, 2)."""
    return torch.cat([transform.get_params(transform.alpha, transform.sigma, [height, width]) for _ in range(n)])


def lag_correlation(fields: np.ndarray, lag: int, axis: int) -> np.ndarray:
    """Correlation across samples between each pixel's displacement and the one `lag` px further along `axis`
    (1: down, 2: right), averaged over the image: per component x, y."""
    size = fields.shape[axis]
    near, far = fields.take(range(size - lag), axis=axis), fields.take(range(lag, size), axis=axis)
    near, far = (near - near.mean(0)) / near.std(0), (far - far.mean(0)) / far.std(0)
    return (near * far).mean(0).mean((0, 1))


def test_displacements_follow_torchvision_distribution() -> None:
    """Independent draws of both samplers (different seeds): the values at a corner, an edge and the centre (where
    the reflect padding and the blur show), their overall spread (the alpha / size scaling) and their smoothness
    (the correlation 1 and 4 px apart, which sigma sets: 0.987 and 0.80 here)."""
    torch.manual_seed(0)
    ours = BatchElastic(ELASTIC_TRANSFORM).sample(1000, 28, 28, CPU).numpy()
    torch.manual_seed(1)
    theirs = torchvision_fields(ELASTIC_TRANSFORM, 1000, 28, 28).numpy()
    for y, x in ((0, 0), (0, 14), (14, 14), (27, 5)):
        for component in (0, 1):
            pvalue = stats.ks_2samp(ours[:, y, x, component], theirs[:, y, x, component]).pvalue
            assert pvalue > 1e-3, (y, x, component)
    np.testing.assert_allclose(ours.std((0, 1, 2)), theirs.std((0, 1, 2)), rtol=0.03)
    for lag in (1, 4):
        for axis in (1, 2):
            np.testing.assert_allclose(
                lag_correlation(ours, lag, axis), lag_correlation(theirs, lag, axis), atol=0.01, err_msg=f"{lag=}"
            )


def test_displacements_are_torchvisions_from_the_same_random_stream() -> None:
    """One rand call for the batch reads the CPU generator as n get_params calls do (x field, y field, per
    sample), so from the same seed the fields agree to rounding: kernel size, padding, per-axis scaling and all
    (a non-square image with different alphas, so that swapped axes show)."""
    transform = transforms.ElasticTransform(alpha=(50.0, 20.0), sigma=2.7)  # 8σ+1 = 22.6: a 23-tap kernel
    torch.manual_seed(7)
    ours = BatchElastic(transform).sample(5, 20, 36, CPU)
    torch.manual_seed(7)
    theirs = torchvision_fields(transform, 5, 20, 36)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("interpolation", [InterpolationMode.BILINEAR, InterpolationMode.NEAREST])
def test_a_batch_warps_each_image_as_torchvision_elastic_transform(interpolation: InterpolationMode) -> None:
    transform = transforms.ElasticTransform(alpha=68.0, sigma=4.0, interpolation=interpolation)
    elastic = BatchElastic(transform)
    torch.manual_seed(2)  # non-square, so that swapped axes in the grid or the field show
    images, displacement = torch.rand(8, 1, 20, 36), elastic.sample(8, 20, 36, CPU)
    ours = elastic.warp(images, displacement)
    for index in range(8):
        theirs = TF.elastic_transform(images[index], displacement[index : index + 1], interpolation, transform.fill)
        torch.testing.assert_close(ours[index], theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("interpolation", [InterpolationMode.BILINEAR, InterpolationMode.NEAREST])
def test_the_fill_is_a_pixel_value_as_on_the_torchvision_pipeline(interpolation: InterpolationMode) -> None:
    """data.pipeline=torchvision distorts PIL images, where fill=200 is a 0-255 value, and rounds to uint8."""
    transform = transforms.ElasticTransform(alpha=300.0, sigma=4.0, interpolation=interpolation, fill=200)
    elastic = BatchElastic(transform)
    torch.manual_seed(3)
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    displacement = elastic.sample(4, 28, 28, CPU)
    ours = elastic.warp(pixels.float() / 255, displacement) * 255
    for index in range(4):
        image = TF.to_pil_image(pixels[index])
        warped = TF.elastic_transform(image, displacement[index : index + 1], interpolation, transform.fill)
        theirs = TF.pil_to_tensor(warped).float()
        assert (ours[index] - theirs).abs().max() <= 0.5 + 1e-3
        assert (theirs == 200).any(), "some pixels must come from outside the image"


def test_each_sample_gets_its_own_field() -> None:
    torch.manual_seed(4)
    elastic = BatchElastic(ELASTIC_TRANSFORM)
    field = elastic.sample(2, 28, 28, CPU)
    assert (field[0] - field[1]).abs().mean() > 0.5 * field.abs().mean()
    image = noise(1, seed=8)
    warped = elastic(image.expand(2, -1, -1, -1))
    assert not torch.allclose(warped[0], warped[1])


@pytest.mark.parametrize(
    "order",
    [["warp", "jitter"], ["warp", "elastic"], ["elastic", "warp"], ["jitter", "elastic", "warp"]],
)
def test_steps_run_in_the_order_of_the_list(order: list[str]) -> None:
    """As Compose runs them, with the random draws in that order too (seed_affine's draws are as before)."""
    rotation, affine, jitter = seed_affine_transforms()
    listed = {"warp": [rotation, affine], "jitter": [jitter], "elastic": [ELASTIC_TRANSFORM]}
    augment = BatchAugment([transform for name in order for transform in listed[name]])
    steps = {"warp": augment.random_warp, "jitter": augment.jitter, "elastic": augment.elastic}
    assert augment.steps == [steps[name] for name in order]
    images = noise(16, seed=9)
    torch.manual_seed(10)
    ours = augment(images)
    torch.manual_seed(10)
    expected = images
    for name in order:
        if name == "warp":
            expected = augment.warp(expected, **augment.sample_warp(16, 28, 28, CPU))
        else:
            expected = steps[name](expected)
    assert torch.equal(ours, expected)


def test_elastic_config_composes_for_both_pipelines(tiny_mnist: Path) -> None:
    cfg = compose_train("augmentation=elastic")
    assert cfg.hydra.runtime.choices.augmentation == "elastic"
    light = compose_train("augmentation=light").augmentation.transforms
    assert cfg.augmentation.transforms[:1] == light
    assert ELASTIC_TRANSFORM.alpha == [68.0, 68.0] and ELASTIC_TRANSFORM.sigma == [4.0, 4.0]
    datamodule = MNISTDataModule(root=str(tiny_mnist), augmentation=ELASTIC, pipeline="tensor")
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    plain = datamodule.on_after_batch_transfer(batch, 0)[0].clone()  # no trainer: evaluation, only normalised
    datamodule.trainer = SimpleNamespace(training=True)  # what trainer.fit's training loop looks like to the hook
    augmented = datamodule.on_after_batch_transfer(batch, 0)[0]
    assert augmented.shape == plain.shape == (64, 1, 28, 28) and not torch.equal(augmented, plain)
    augment = datamodule.batch_augment
    assert augment.steps == [augment.random_warp, augment.elastic]
    per_sample = MNISTDataModule(root=str(tiny_mnist), augmentation=ELASTIC, pipeline="torchvision")
    per_sample.setup("fit")
    assert per_sample.train_set[0][0].shape == (1, 28, 28)


@pytest.mark.parametrize(
    ("transforms_", "message"),
    [
        ([transforms.ElasticTransform(sigma=(4.0, 2.0))], "sigma=[4.0, 2.0]; it needs one sigma > 0"),
        (
            [transforms.ElasticTransform(interpolation=InterpolationMode.BICUBIC)],
            "interpolation=bicubic; it supports bilinear and nearest",
        ),
        ([transforms.ElasticTransform(fill=[0.0, 255.0])], "fill=[0.0, 255.0] must be one number"),
        (
            [seed_affine_transforms()[0], ELASTIC_TRANSFORM, seed_affine_transforms()[1]],
            "order RandomRotation, ElasticTransform, RandomAffine",
        ),
        ([ELASTIC_TRANSFORM, ELASTIC_TRANSFORM], "order ElasticTransform, ElasticTransform"),
    ],
)
def test_what_cannot_be_batched_is_refused_in_one_line(transforms_: list[torch.nn.Module], message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as error:
        BatchAugment(transforms_)
    assert "\n" not in str(error.value)


def test_a_blur_wider_than_the_image_is_refused_in_one_line() -> None:
    """torchvision's reflect padding fails there with a traceback; sigma 6.875 needs a 57 px kernel."""
    elastic = BatchElastic(transforms.ElasticTransform(sigma=6.875))
    with pytest.raises(UserError, match="sigma=6.875 blurs over 57 px, too wide for 28x28 images; use a sigma below"):
        elastic.sample(1, 28, 28, CPU)
    assert BatchElastic(transforms.ElasticTransform(sigma=6.87)).sample(1, 28, 28, CPU).shape == (1, 28, 28, 2)


def torchvision_warp_samples(n: int) -> dict[str, np.ndarray]:
    rotation, affine = seed_affine_transforms()[:2]
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
    ours = {k: v.numpy() for k, v in BatchAugment(seed_affine_transforms()).sample_warp(20_000, 28, 28, CPU).items()}
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
    params = BatchAugment(seed_affine_transforms()).sample_warp(16, 28, 28, CPU)
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
