"""`python -m src.predict ckpt_path=... image=PATH`: the digit in an image (or in each image of a folder).

Images of any size and either polarity are brought to MNIST's form first: white digit on black; a 28×28 image is
taken as already centred, anything else is cropped to its ink, scaled to fit 20×20 and centred by its centre of
mass in 28×28, as MNIST's digits were made.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from src.core.cli import one_line_exit
from src.core.config import check_all_set
from src.core.errors import UserError
from src.core.resolvers import register_resolvers
from src.mnist.images import IMAGE_SIZE as SIDE
from src.mnist.images import MNIST_MEAN, MNIST_STD
from src.mnist.record import load_trained

DIGIT_BOX = 20


def read_image(path: Path) -> np.ndarray:
    """Grey levels in [0, 1], or one line saying the file is not an image."""
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
            if image.has_transparency_data:
                alpha = np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
                return on_contrasting_background(grey, alpha)
            return grey
    except (UnidentifiedImageError, OSError):
        raise UserError(f"image={path} is not an image PIL can read (png, jpg, bmp, ...)") from None


def on_contrasting_background(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A digit drawn on a transparent canvas (a drawing app's export) is its opaque pixels: laid over white where
    they are dark, over black where they are light, so that the digit stands out (dropping the alpha would leave
    black ink on black, a blank image)."""
    opaque = alpha > 0.5
    background = 1.0 if opaque.any() and grey[opaque].mean() < 0.5 else 0.0
    return grey * alpha + background * (1.0 - alpha)


def to_mnist(grey: np.ndarray, path: Path) -> np.ndarray:
    """28×28, white on black, the digit centred as in MNIST."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.mean() > 0.5:  # black on white
        grey = 1.0 - grey
    if grey.shape == (SIDE, SIDE):
        return grey
    ink = grey > 0.5 * grey.max()
    if grey.max() <= 0.1 or not ink.any():
        raise UserError(f"image={path} is blank: no digit to read")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    digit = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = DIGIT_BOX / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
    digit = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    canvas = np.zeros((SIDE, SIDE), dtype=np.float32)
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    top = int(round(SIDE / 2 - (ys * digit).sum() / mass))
    left = int(round(SIDE / 2 - (xs * digit).sum() / mass))
    top, left = min(max(top, 0), SIDE - digit.shape[0]), min(max(left, 0), SIDE - digit.shape[1])
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas.clip(0.0, 1.0)


def image_paths(target: Path) -> list[Path]:
    if target.is_dir():
        files = sorted(path for path in target.iterdir() if path.is_file() and not path.name.startswith("."))
        if not files:
            raise UserError(f"image={target} is an empty folder")
        return files
    if not target.is_file():
        raise UserError(f"image={target} does not exist; give an image file or a folder of images")
    return [target]


def predict(ckpt_path: Path, target: Path) -> list[tuple[Path, int | None, float | None, str]]:
    """(image, digit, probability, note) per image; in a folder, files that are not images get a note instead."""
    model = load_trained(ckpt_path).model
    paths = image_paths(target)
    rows = []
    for path in paths:
        try:
            grey = to_mnist(read_image(path), path)
        except UserError as error:
            if len(paths) == 1:
                raise
            rows.append((path, None, None, str(error).removeprefix(f"image={path} ")))
            continue
        batch = torch.from_numpy((grey - MNIST_MEAN) / MNIST_STD)[None, None]
        with torch.no_grad():
            probabilities = model(batch).exp()[0]
        digit = int(probabilities.argmax())
        rows.append((path, digit, float(probabilities[digit]), ""))
    return rows


register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        check_all_set(cfg)
        rows = predict(Path(cfg.ckpt_path).expanduser(), Path(cfg.image).expanduser())
    except Exception as error:
        raise one_line_exit(error) from None
    if len(rows) == 1:
        path, digit, probability, _ = rows[0]
        print(f"{path}: {digit} (probability {probability:.4f})")
        return
    print("| image | digit | probability |\n|---|---|---|")
    for path, digit, probability, note in rows:
        print(f"| {path.name} | {'-' if digit is None else digit} | {note or f'{probability:.4f}'} |")


if __name__ == "__main__":
    main()
