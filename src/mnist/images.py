"""What an MNIST image is, for every part that makes, reads or draws one: 28×28 grey levels, a white digit on black,
normalised with the training set's mean and standard deviation; and how any picture of a digit is brought to that
form (`to_mnist`, plain numpy), for `src.predict` and the page alike. No torch here: predict from an ONNX file
imports only numpy, Pillow and onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from src.core.errors import UserError

IMAGE_SIZE = 28  # every net takes 1×IMAGE_SIZE×IMAGE_SIZE
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the 60,000 training images' grey levels in [0, 1]
DIGIT_BOX = 20  # MNIST fitted each digit into 20×20, then centred it by its centre of mass in 28×28
MAX_PIXELS = 4096 * 4096  # a larger picture is refused before it is decoded (a small file can claim a huge one)
# Less ink than this is no digit: a faint scan, an empty canvas, a stray dot. Contrast is the range of grey levels;
# the ink's extent is its bounding box's longer side, as a fraction of the picture's longer side.
MIN_CONTRAST, MIN_INK_EXTENT = 0.2, 0.1


def read_image(
    source: str | Path | BinaryIO, name: str, max_pixels: int = MAX_PIXELS, formats: tuple[str, ...] | None = None
) -> np.ndarray:
    """Grey levels in [0, 1] of an image file (or a file-like object), or one line naming `name` and why not.
    `formats`: the only decoders to try (e.g. ("PNG",)); None: any Pillow reads."""
    try:
        with Image.open(source, formats=formats) as image:
            if image.width * image.height > max_pixels:
                raise UserError(
                    f"{name} is {image.width}×{image.height} pixels, over the {max_pixels:,} this reads; scale it down"
                )
            grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
            if image.has_transparency_data:
                alpha = np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
                return on_contrasting_background(grey, alpha)
            return grey
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        raise UserError(f"{name} is not an image PIL can read (png, jpg, bmp, ...)") from None


def on_contrasting_background(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A digit drawn on a transparent canvas (a drawing app's export, the page's canvas) is its opaque pixels: laid
    over white where they are dark, over black where they are light, so that the digit stands out (dropping the alpha
    would leave black ink on black, a blank image)."""
    opaque = alpha > 0.5
    background = 1.0 if opaque.any() and grey[opaque].mean() < 0.5 else 0.0
    return grey * alpha + background * (1.0 - alpha)


def white_on_black(grey: np.ndarray) -> np.ndarray:
    """Black-on-white pictures (told by their border) inverted, as MNIST's digits are white on black."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return 1.0 - grey if border.mean() > 0.5 else grey


def ink_box(grey: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns holding the digit of a white-on-black picture, or None where there is no digit: too
    little contrast, or ink over less than `MIN_INK_EXTENT` of the picture (a dot)."""
    if grey.max() - grey.min() < MIN_CONTRAST:
        return None
    ink = grey > grey.min() + 0.5 * (grey.max() - grey.min())
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    if extent < MIN_INK_EXTENT * max(grey.shape):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def resampling(old: int, new: int) -> np.ndarray:
    """The new×old matrix that resizes one axis by a triangle filter widened to the scale when shrinking (what
    Pillow's antialiased bilinear resize does): each new pixel a weighted mean of the old pixels it covers."""
    scale = old / new
    support = max(scale, 1.0)
    centres = (np.arange(new) + 0.5) * scale
    weights = np.clip(1.0 - np.abs(np.arange(old)[None, :] + 0.5 - centres[:, None]) / support, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def to_mnist(grey: np.ndarray) -> np.ndarray | None:
    """Any picture of one digit (grey levels in [0, 1], either polarity) as MNIST's digits were made: white on black,
    cropped to its ink, scaled so its longer side is 20 px, centred by its centre of mass in 28×28. A 28×28 picture
    is taken as already centred. None where there is no digit (blank or near-blank)."""
    grey = white_on_black(np.asarray(grey, dtype=np.float32))
    box = ink_box(grey)
    if box is None:
        return None
    if grey.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return grey
    digit = grey[box]
    height, width = (max(1, round(side * DIGIT_BOX / max(digit.shape))) for side in digit.shape)
    digit = resampling(digit.shape[0], height) @ digit @ resampling(digit.shape[1], width).T
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    top = int(round(IMAGE_SIZE / 2 - (ys * digit).sum() / mass))
    left = int(round(IMAGE_SIZE / 2 - (xs * digit).sum() / mass))
    top, left = min(max(top, 0), IMAGE_SIZE - height), min(max(left, 0), IMAGE_SIZE - width)
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas.clip(0.0, 1.0)


def normalise(digits: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> np.ndarray:
    """28×28 grey levels in [0, 1] (one or N of them) as a net's float32 N×1×28×28 input."""
    batch = np.asarray(digits, dtype=np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return ((batch - np.float32(mean)) / np.float32(std)).astype(np.float32)
