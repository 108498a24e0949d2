"""`python -m src.predict onnx=model.onnx image=PATH` (or `ckpt_path=...`): the digit in an image, or in each image
of a folder. Prints only; writes nothing.

Images of any size and either polarity are brought to MNIST's form first (`src.mnist.images.to_mnist`); a blank or
near-blank one says "no digit" instead of guessing. From an ONNX file (`src.export`) it imports no torch: numpy,
Pillow and onnxruntime answer within half a second of the process starting; from a checkpoint, torch without
Lightning. Hydra is not imported either (it costs more than the answer): the two keys are read as Hydra reads them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.core.args import key_values
from src.core.errors import UserError, exit_line
from src.mnist.images import read_image
from src.mnist.predictor import Model, open_model, predict_picture

KEYS = {"onnx": None, "ckpt_path": None, "image": None}


def image_paths(target: Path) -> list[Path]:
    if target.is_dir():
        files = sorted(path for path in target.iterdir() if path.is_file() and not path.name.startswith("."))
        if not files:
            raise UserError(f"image={target} is an empty folder")
        return files
    if not target.is_file():
        raise UserError(f"image={target} does not exist; give an image file or a folder of images")
    return [target]


def predict(model: Model, target: Path) -> list[tuple[Path, int | None, float | None, str]]:
    """(image, digit, probability, note) per image; in a folder, files that are not images get a note instead."""
    paths = image_paths(target)
    rows = []
    for path in paths:
        try:
            prediction = predict_picture(model, read_image(path, f"image={path}"))
        except UserError as error:
            if len(paths) == 1:
                raise
            rows.append((path, None, None, str(error).removeprefix(f"image={path} ")))
            continue
        if prediction.digit is None:
            rows.append((path, None, None, "no digit (blank or nearly)"))
        else:
            rows.append((path, prediction.digit, prediction.probabilities[prediction.digit], ""))
    return rows


def main(args: list[str]) -> None:
    try:
        values = key_values(args, KEYS, required=("image",))
        model = open_model(values["onnx"], values["ckpt_path"])
        rows = predict(model, Path(values["image"]).expanduser())
    except Exception as error:
        raise exit_line(error) from None
    if len(rows) == 1:
        path, digit, probability, note = rows[0]
        print(f"{path}: {note}" if digit is None else f"{path}: {digit} (probability {probability:.4f})")
        return
    print("| image | digit | probability |\n|---|---|---|")
    for path, digit, probability, note in rows:
        print(f"| {path.name} | {'-' if digit is None else digit} | {note or f'{probability:.4f}'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
