"""`to_mnist`, the one preprocessing predict and the page share (plain numpy): blank or near-blank pictures are no
digit, a 28×28 digit is kept as it is, and the resize is Pillow's antialiased bilinear."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from src.mnist.images import normalise, resampling, to_mnist
from tests.helpers import tiny_digits


@pytest.mark.parametrize(
    "picture",
    [
        np.zeros((280, 280)),  # an empty canvas, white on black
        np.ones((100, 60)),  # an empty sheet, black on white
        np.full((50, 50), 0.5) + np.random.default_rng(0).uniform(-0.05, 0.05, (50, 50)),  # grey noise, no contrast
        np.pad(np.ones((5, 5)), 137),  # a dot on a 280×280 canvas
    ],
    ids=["empty-canvas", "empty-sheet", "flat-noise", "a-dot"],
)
def test_a_blank_or_nearly_blank_picture_is_no_digit(picture: np.ndarray) -> None:
    assert to_mnist(picture) is None


def test_a_28x28_digit_is_kept_and_a_black_on_white_one_inverted() -> None:
    images, _ = tiny_digits(2, seed=0)
    digit = images[0].astype(np.float32) / 255
    np.testing.assert_array_equal(to_mnist(digit), digit)
    np.testing.assert_allclose(to_mnist(1 - digit), digit, atol=1e-6)


def test_a_large_digit_is_fitted_into_20x20_and_centred_by_its_mass() -> None:
    picture = np.zeros((300, 200), dtype=np.float32)
    picture[40:240, 120:150] = 1.0  # a "1", 200 px tall, right of centre
    digit = to_mnist(picture)
    rows, columns = np.flatnonzero(digit.max(axis=1) > 0.5), np.flatnonzero(digit.max(axis=0) > 0.5)
    assert rows[-1] - rows[0] + 1 == 20 and columns[-1] - columns[0] + 1 in (3, 4)
    ys, xs = np.indices(digit.shape)
    assert abs((ys * digit).sum() / digit.sum() - 14) <= 0.5 and abs((xs * digit).sum() / digit.sum() - 14) <= 0.5


def test_the_resize_is_pillows_antialiased_bilinear() -> None:
    picture = np.random.default_rng(1).uniform(0, 1, (97, 61)).astype(np.float32)
    ours = resampling(97, 20) @ picture @ resampling(61, 13).T
    pillows = np.asarray(Image.fromarray(picture, mode="F").resize((13, 20), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(ours, pillows, atol=1e-4)


def test_normalise_gives_the_nets_input() -> None:
    batch = normalise(np.zeros((3, 28, 28)))
    assert batch.shape == (3, 1, 28, 28) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, -0.1307 / 0.3081, rtol=1e-6)
