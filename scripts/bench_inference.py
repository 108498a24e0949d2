"""Inference speed of exported nets: PyTorch eager (the checkpoint) against onnxruntime fp32 and int8 (the export's
files), batch-1 latency (median and p99, one thread) and batch-1,000 throughput (every core), on the real test images.

    python scripts/bench_inference.py outputs/exports/<speedrun> outputs/exports/<record> ... > results/inference/x.json

Each argument is a `src.export quantize=int8` dir; its export.json names the checkpoint. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from src.core.hardware import cpu_model
from src.mnist.classifier import normalised
from src.mnist.export import latencies_ms
from src.mnist.files import read_digits
from src.mnist.predictor import OnnxModel
from src.mnist.record import load_trained


def measure(answer, batch1: np.ndarray, batch1000: np.ndarray, runs: int) -> dict[str, float]:
    single = latencies_ms(lambda: answer(batch1), runs)
    bulk = latencies_ms(lambda: answer(batch1000), max(5, runs // 50), warmup=2)
    return {
        "batch1_ms_median": round(float(np.median(single)), 4),
        "batch1_ms_p99": round(float(np.percentile(single, 99)), 4),
        "batch1000_images_per_s": round(1000 / (float(np.median(bulk)) / 1000)),
    }


def bench(export_dir: Path, runs: int) -> dict:
    report = json.loads((export_dir / "export.json").read_text())
    images, _ = read_digits(Path(report["data_root"]), train=False)
    batch = normalised(images[:1000])
    model = load_trained(report["ckpt_path"]).model
    results = {"recipe": report["recipe"], "params": report["params"], "test_time_shifts": report["test_time_shifts"],
               "fp32_accuracy": report["fp32"]["accuracy"], "int8_accuracy": report["int8"]["accuracy"]}  # fmt: skip

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    for threads, key in ((1, "batch1"), (os.cpu_count(), "batch1000")):
        torch.set_num_threads(threads)
        figures = measure(eager, batch[:1], batch, runs)
        results.setdefault("pytorch_eager_fp32", {}).update({k: v for k, v in figures.items() if k.startswith(key)})
    for precision, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        data = (export_dir / name).read_bytes()
        figures = {}
        for threads, key in ((1, "batch1"), (0, "batch1000")):  # 0: onnxruntime's default, every core
            runtime = OnnxModel(data, name, threads=threads)
            measured = measure(runtime.log_probabilities, batch[:1].numpy(), batch.numpy(), runs)
            figures |= {k: v for k, v in measured.items() if k.startswith(key)}
        results[f"onnxruntime_{precision}"] = {"bytes": len(data), **figures}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=1000, help="batch-1 answers timed per runtime")
    args = parser.parse_args()
    import onnxruntime  # noqa: PLC0415 - its version, for the record

    print(json.dumps({
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "threads": {"batch1": 1, "batch1000": os.cpu_count()},
        "nets": [bench(path, args.runs) for path in args.exports],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
