"""`python -m src.export ckpt_path=...`: the checkpoint's net as `model.onnx` (dynamic batch, the recipe's test-time
shifts inside the graph, metadata saying how to feed it), checked by onnxruntime against PyTorch on the test set
before anything is written: a single image whose top-1 differs stops the export in one line. `quantize=int8` adds
`model.int8.onnx` (static QDQ quantization calibrated on training images), refused if it loses more than
`int8_max_loss` accuracy points. `export.json` holds the agreement, accuracies, sizes and batch-1 latencies."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from src.core.checkpoint import checkpoint_bytes
from src.core.cli import in_new_dir
from src.core.errors import UserError
from src.core.files import replaced_atomically, write_json_atomically
from src.core.provenance import provenance
from src.core.resolvers import register_resolvers
from src.mnist.classifier import normalised
from src.mnist.export import latencies_ms, metadata, onnx_fp32, onnx_int8, parity
from src.mnist.files import evaluation_digits, read_digits, split_order
from src.mnist.predictor import OnnxModel
from src.mnist.record import load_trained

log = logging.getLogger(__name__)
QUANTIZE = (None, "int8")
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


def export(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    if cfg.quantize not in QUANTIZE:
        raise UserError(f"quantize={cfg.quantize} is not one of int8, null (fp32 only)")
    ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    contents = checkpoint_bytes(ckpt_path)
    sha256 = hashlib.sha256(contents).hexdigest()  # of the bytes loaded
    model, record, epochs = load_trained(ckpt_path, contents=contents)
    root = Path(cfg.data.root).expanduser().resolve()
    images, labels = evaluation_digits(root, cfg.data.download)
    batch = normalised(images)
    with torch.inference_mode():
        reference = torch.cat([model(part) for part in batch.split(1000)]).exp().numpy()
    batch, labels = batch.numpy(), labels.numpy()

    files = {"fp32": onnx_fp32(model, metadata(record, model, sha256, epochs, "fp32"))}
    if cfg.quantize == "int8":
        train_images, _ = read_digits(root, train=True)
        drawn = split_order(len(train_images), 0)[: cfg.calibration_images]
        calibration = normalised(train_images[drawn]).numpy()
        files["int8"] = onnx_int8(files["fp32"], calibration, metadata(record, model, sha256, epochs, "int8"))

    report: dict[str, Any] = {}
    for precision, data in files.items():
        runtime = OnnxModel(data, FILES[precision], threads=0)  # 0: onnxruntime's default, every core
        report[precision] = {"file": FILES[precision], "bytes": len(data), **parity(runtime, batch, reference, labels)}
    check(report, cfg.int8_max_loss)  # before timing: a refused export stops at once
    for precision, data in files.items():
        timed, one = OnnxModel(data, FILES[precision], threads=1), batch[:1]
        times = latencies_ms(lambda runtime=timed: runtime.log_probabilities(one), cfg.latency_runs)  # noqa: B023
        report[precision]["batch1_latency_ms_median"] = round(float(np.median(times)), 4)
    for precision, data in files.items():
        with replaced_atomically(output_dir / FILES[precision]) as partial:
            partial.write_bytes(data)
    summary = {
        "ckpt_path": str(ckpt_path),
        "ckpt_sha256": sha256,
        "recipe": record.recipe,
        "seed": record.seed,
        "params": model.num_params,
        "epoch": epochs,
        "test_time_shifts": [list(shift) for shift in model.test_time_shifts],
        "test_time_shifts_in_graph": True,
        "data_root": str(root),
        **report,
        "onnxruntime_threads_for_latency": 1,
        **provenance("32-true", torch.device("cpu")),
    }
    write_json_atomically(output_dir / "export.json", summary)
    for precision, figures in report.items():
        log.info("%s: %s, top-1 agreement with PyTorch %.2f%% on %d test images, accuracy %.2f%% (PyTorch %.2f%%), "
                 "%d bytes, batch-1 %.3f ms", precision, output_dir / figures["file"], figures["top1_agreement"],
                 figures["images"], figures["accuracy"], figures["pytorch_accuracy"], figures["bytes"],
                 figures["batch1_latency_ms_median"])  # fmt: skip
    return summary


def check(report: dict[str, Any], int8_max_loss: float) -> None:
    """fp32 must agree with PyTorch on every image; int8 may lose at most `int8_max_loss` accuracy points."""
    fp32 = report["fp32"]
    if fp32["disagreements"]:
        first = fp32["first_disagreements"][0]
        raise UserError(
            f"model.onnx disagrees with PyTorch on {fp32['disagreements']} of {fp32['images']:,} test images (image "
            f"{first['image']}: ONNX says {first['onnx']}, PyTorch {first['pytorch']}); nothing written"
        )
    if "int8" in report:
        loss = round(fp32["accuracy"] - report["int8"]["accuracy"], 4)
        if loss > int8_max_loss:
            raise UserError(
                f"model.int8.onnx scores {report['int8']['accuracy']:.2f}% against fp32's {fp32['accuracy']:.2f}%, a "
                f"loss of {loss} points over int8_max_loss={int8_max_loss}; nothing written (raise int8_max_loss to "
                "accept it)"
            )


register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    in_new_dir(cfg, export)


if __name__ == "__main__":
    main()
