"""A trained net as `src.predict` and the page use it: ten probabilities for 28×28 digits, from an exported ONNX file
(onnxruntime and numpy only: no torch) or from a checkpoint (torch, imported only then). An ONNX file is data to
check, never code to run: read with a size cap, from bytes (no external files), on onnxruntime's standard CPU
provider (no custom ops), and refused in one line unless it is a 1×28×28 → 10 classifier."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from src.core.errors import UserError, reason_of
from src.mnist.images import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, normalise, to_mnist

CLASSES = 10
MAX_ONNX_BYTES = 16 * 2**20  # this project's nets export to well under 1 MiB
INPUT_NAME, OUTPUT_NAME = "image", "log_probs"  # what src.export names the graph's input and output
META_PREFIX = "mnist."  # src.export's metadata_props keys: mnist.recipe, mnist.params, mnist.normalisation, ...


class Model(Protocol):
    """What predicts: N×28×28 grey levels in [0, 1] → N×10 probabilities."""

    description: str

    def probabilities(self, digits: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Prediction:
    digit: int | None  # None: no digit in the picture
    probabilities: list[float] | None


def predict_picture(model: Model, grey: np.ndarray) -> Prediction:
    """The digit in a picture of any size and polarity (`to_mnist`), or no digit where it is blank."""
    digit = to_mnist(grey)
    if digit is None:
        return Prediction(None, None)
    probabilities = model.probabilities(digit[None])[0]
    return Prediction(int(probabilities.argmax()), [float(p) for p in probabilities])


class OnnxModel:
    """An exported classifier run by onnxruntime on the CPU."""

    def __init__(self, model: bytes, name: str, threads: int = 1) -> None:
        """`model`: the file's bytes; `name` says where they came from in an error line (`onnx=PATH`)."""
        import onnxruntime as ort  # noqa: PLC0415 - only predict from ONNX pays for it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # one image at a time: more threads only wait for each other
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for a file that is not a model it can run
            raise UserError(f"{name} is not an ONNX model onnxruntime can run ({reason_of(error)[:200]})") from None
        self.check_signature(name)
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self.input_name = self.session.get_inputs()[0].name
        recipe = self.metadata.get(f"{META_PREFIX}recipe", "unknown recipe")
        self.description = f"{recipe}, {self.metadata.get(f'{META_PREFIX}precision', 'fp32')}"
        self.mean, self.std = self.normalisation(name)

    @classmethod
    def from_file(cls, path: str | Path, key: str = "onnx", threads: int = 1) -> OnnxModel:
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"{key}={path} is not a file")
        if path.stat().st_size > MAX_ONNX_BYTES:
            raise UserError(f"{key}={path} is {path.stat().st_size:,} bytes, over the {MAX_ONNX_BYTES:,} this reads")
        return cls(path.read_bytes(), f"{key}={path}", threads)

    def check_signature(self, name: str) -> None:
        """One float input of N×1×28×28 and one output of N×10, or one line saying what the file holds instead."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        expected = f"one float input N×1×{IMAGE_SIZE}×{IMAGE_SIZE} and one output N×{CLASSES} (what src.export writes)"
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{name} has {len(inputs)} inputs and {len(outputs)} outputs; expected {expected}")
        given, answer = inputs[0], outputs[0]
        if given.type != "tensor(float)" or list(given.shape[1:]) != [1, IMAGE_SIZE, IMAGE_SIZE]:
            raise UserError(f"{name} takes {given.type} of shape {given.shape}; expected {expected}")
        if len(answer.shape) != 2 or answer.shape[1] != CLASSES:
            raise UserError(f"{name} answers {answer.type} of shape {answer.shape}; expected {expected}")

    def normalisation(self, name: str) -> tuple[float, float]:
        """The mean and std the file says its input is normalised with (this project's, where it says nothing)."""
        stated = self.metadata.get(f"{META_PREFIX}normalisation")
        try:
            values = json.loads(stated) if stated else {"mean": MNIST_MEAN, "std": MNIST_STD}
            return float(values["mean"]), float(values["std"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{name}'s {META_PREFIX}normalisation is not {{mean, std}}: {stated[:80]!r}") from None

    def log_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """The graph's output for a normalised N×1×28×28 float32 batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def probabilities(self, digits: np.ndarray) -> np.ndarray:
        return np.exp(self.log_probabilities(normalise(digits, self.mean, self.std)))


class CheckpointModel:
    """A checkpoint's net (torch, no Lightning), with its recipe's test-time shifts."""

    def __init__(self, path: str | Path, key: str = "ckpt_path") -> None:
        import torch  # noqa: PLC0415 - only predict from a checkpoint pays for torch

        from src.mnist.record import load_trained  # noqa: PLC0415 - imports torch

        self.torch = torch
        trained = load_trained(path, key)
        self.model = trained.model
        self.description = f"{trained.record.recipe}, checkpoint"

    def probabilities(self, digits: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(normalise(digits))).exp().numpy()


def open_model(onnx: str | None, ckpt_path: str | None) -> Model:
    """The model `onnx=` or `ckpt_path=` names (exactly one of them)."""
    if (onnx is None) == (ckpt_path is None):
        given = "both" if onnx is not None else "neither"
        raise UserError(f"give one of onnx=PATH.onnx (an exported model) or ckpt_path=PATH.ckpt; {given} given")
    return OnnxModel.from_file(onnx) if onnx is not None else CheckpointModel(ckpt_path)
