"""A trained net as an ONNX file any runtime can load: the graph (test-time shifts inside it, so the file scores what
the recipe reports), the metadata that says how to feed it, and its int8 twin (static QDQ quantization calibrated on
training images). `src.export` checks both against PyTorch before writing them."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from src.mnist.classifier import TrainedNet
from src.mnist.images import IMAGE_SIZE, MNIST_MEAN, MNIST_STD
from src.mnist.predictor import CLASSES, INPUT_NAME, META_PREFIX, OUTPUT_NAME, OnnxModel
from src.mnist.record import RunRecord

CALIBRATION_BATCH = 100
PARITY_BATCH = 1000
NOISY_LOGGERS = ("onnx_ir", "onnxscript")  # a line per optimisation pass at INFO, into the export's log


def metadata(record: RunRecord, model: TrainedNet, source_sha256: str, epochs: int, precision: str) -> dict[str, str]:
    """The file's metadata_props (strings; structured values as JSON), each key prefixed `mnist.`."""
    plain = {
        "input": f"{INPUT_NAME}: float32 N×1×{IMAGE_SIZE}×{IMAGE_SIZE}, a white digit on black, grey levels in [0, 1] "
        "normalised as (x - mean) / std",
        "output": f"{OUTPUT_NAME}: float32 N×{CLASSES}, the log-probabilities of the digits 0-9",
        "normalisation": {"mean": MNIST_MEAN, "std": MNIST_STD},
        "classes": [str(digit) for digit in range(CLASSES)],
        "recipe": record.recipe,
        "seed": record.seed,
        "epochs": epochs,
        "params": model.num_params,
        "net": {"class": record.net_class, "settings": record.net_settings},
        "source_sha256": source_sha256,
        "test_time_shifts": [list(shift) for shift in model.test_time_shifts],
        "test_time_shifts_in_graph": True,  # the output already averages the shifted copies' probabilities
        "precision": precision,
    }
    return {f"{META_PREFIX}{key}": v if isinstance(v, str) else json.dumps(v) for key, v in plain.items()}


def with_metadata(model: onnx.ModelProto, props: dict[str, str]) -> bytes:
    """The model with `props` as its metadata, and none of the exporter's per-node notes (stack traces that name
    this machine's paths, three times the weights' size)."""
    for node in model.graph.node:
        del node.metadata_props[:]
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def onnx_fp32(model: TrainedNet, props: dict[str, str]) -> bytes:
    """`model` (eval mode, fp32, on the CPU) as ONNX with a dynamic batch axis, through torch.export (dynamo)."""
    example = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    batch = torch.export.Dim("batch")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    program = torch.onnx.export(model.eval().cpu(), (example,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), verbose=False)  # fmt: skip
    return with_metadata(program.model_proto, props)


def onnx_int8(fp32: bytes, calibration: np.ndarray, props: dict[str, str]) -> bytes:
    """The fp32 graph statically quantized to int8 in QDQ form (weights per channel, activations per tensor, their
    ranges the min and max over the normalised `calibration` images), as onnxruntime's CPU provider runs it."""
    from onnxruntime.quantization import (  # noqa: PLC0415 - only an int8 export needs the quantization tools
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(np.split(calibration, range(CALIBRATION_BATCH, len(calibration),
                                                                                  CALIBRATION_BATCH)))  # fmt: skip

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    quiet = logging.getLogger()  # the quantizer warns on the root logger about BatchNorm's 1-d weights
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # setLevel, not .level: it clears the loggers' cached levels both ways
    try:
        with tempfile.TemporaryDirectory() as scratch:
            source, prepared, target = (Path(scratch) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
            source.write_bytes(fp32)
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(target), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
            return with_metadata(onnx.load(str(target)), props)
    finally:
        quiet.setLevel(level)


def parity(runtime: OnnxModel, batch: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """`runtime` against PyTorch's probabilities `reference` on the same normalised images: top-1 agreement (and the
    first images where they differ), both accuracies, the largest probability difference."""
    probabilities = np.concatenate([np.exp(runtime.log_probabilities(part)) for part in np.array_split(
        batch, max(1, len(batch) // PARITY_BATCH))])  # fmt: skip
    ours, theirs = probabilities.argmax(axis=1), reference.argmax(axis=1)
    differ = np.flatnonzero(ours != theirs)
    return {
        "images": len(labels),
        "top1_agreement": round(100.0 * (1 - len(differ) / len(labels)), 4),
        "disagreements": len(differ),
        "first_disagreements": [{"image": int(i), "onnx": int(ours[i]), "pytorch": int(theirs[i])} for i in differ[:5]],
        "accuracy": round(100.0 * float((ours == labels).mean()), 4),
        "pytorch_accuracy": round(100.0 * float((theirs == labels).mean()), 4),
        "max_probability_difference": float(np.abs(probabilities - reference).max()),
    }


def latencies_ms(answer: Callable[[], object], runs: int, warmup: int = 20) -> np.ndarray:
    """Wall-clock milliseconds of `runs` calls of `answer`, after `warmup` calls (allocations, caches, threads)."""
    for _ in range(warmup):
        answer()
    times = np.empty(runs)
    for run in range(runs):
        start = time.perf_counter()
        answer()
        times[run] = (time.perf_counter() - start) * 1000.0
    return times
