"""Inference speed of exported nets: PyTorch eager (the checkpoint) against onnxruntime fp32 and int8 (the export's
files), batch-1 latency (median and p99, one thread) and the throughput of a batch of 1,000 (`--bulk`; every core), on
the real test images; and `src.predict` from process start to answer on one test digit as a PNG, from the ONNX file
and from the checkpoint (runs interleaved, so both see the same machine).

    python scripts/bench_inference.py outputs/exports/<speedrun> outputs/exports/<record> ... > results/inference/x.json

Each argument is a `src.export quantize=int8` dir; its export.json names the checkpoint and holds the agreement and
accuracies the export checked, which are copied beside the timings. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from src.core.hardware import cpu_model
from src.mnist.classifier import normalised
from src.mnist.export import latencies_ms
from src.mnist.files import read_digits
from src.mnist.predictor import OnnxModel
from src.mnist.record import load_trained


def measure(answer, batch1: np.ndarray, batch: np.ndarray, runs: int) -> dict[str, float]:
    single = latencies_ms(lambda: answer(batch1), runs)
    bulk = latencies_ms(lambda: answer(batch), max(5, runs // 50), warmup=2)
    return {
        "batch1_ms_median": round(float(np.median(single)), 4),
        "batch1_ms_p99": round(float(np.percentile(single, 99)), 4),
        "bulk_images_per_s": round(len(batch) / (float(np.median(bulk)) / 1000)),
    }


def bench(export_dir: Path, runs: int, bulk: int) -> dict:
    report = json.loads((export_dir / "export.json").read_text())
    images, _ = read_digits(Path(report["data_root"]), train=False)
    batch = normalised(images[:bulk])
    model = load_trained(report["ckpt_path"]).model
    results = {
        "recipe": report["recipe"], "params": report["params"], "epoch": report["epoch"],
        "test_time_shifts": report["test_time_shifts"], "pytorch_accuracy": report["fp32"]["pytorch_accuracy"],
        **{f"{precision}_{key}": report[precision][key] for precision in ("fp32", "int8")
           for key in ("accuracy", "top1_agreement", "disagreements", "images")},
    }  # fmt: skip

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    before = torch.get_num_threads()
    for threads, key in ((1, "batch1"), (os.cpu_count(), "bulk")):
        torch.set_num_threads(threads)
        figures = measure(eager, batch[:1], batch, runs)
        results.setdefault("pytorch_eager_fp32", {}).update({k: v for k, v in figures.items() if k.startswith(key)})
    torch.set_num_threads(before)
    for precision, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        data = (export_dir / name).read_bytes()
        figures = {}
        for threads, key in ((1, "batch1"), (0, "bulk")):  # 0: onnxruntime's default, every core
            runtime = OnnxModel(data, name, threads=threads)
            measured = measure(runtime.log_probabilities, batch[:1].numpy(), batch.numpy(), runs)
            figures |= {k: v for k, v in measured.items() if k.startswith(key)}
        results[f"onnxruntime_{precision}"] = {"bytes": len(data), **figures}
    return results


def start_to_answer(export_dir: Path, image: Path, runs: int) -> dict[str, list[float]]:
    """Seconds from starting `python -m src.predict` to its exit, from the ONNX file and from the checkpoint, in
    turns; the first run of each comes first in its list (it may find fewer files in the page cache)."""
    report = json.loads((export_dir / "export.json").read_text())
    sources = {"onnx": f"onnx={export_dir / 'model.onnx'}", "checkpoint": f"ckpt_path={report['ckpt_path']}"}
    seconds: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(runs):
        for name, source in sources.items():
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "src.predict", source, f"image={image}"], capture_output=True,
                                  text=True)  # fmt: skip
            seconds[name].append(round(time.perf_counter() - start, 3))
            if done.returncode != 0:
                last = done.stderr.strip().splitlines()[-1:] or [f"status {done.returncode}"]
                sys.exit(f"error: src.predict {source} failed: {last[0]}")
    return {**seconds, **{f"{name}_median": round(float(np.median(values)), 3) for name, values in seconds.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=1000, help="batch-1 answers timed per runtime")
    parser.add_argument("--bulk", type=int, default=1000, help="test images in the batch whose throughput is timed")
    parser.add_argument("--start-runs", type=int, default=10, help="src.predict processes timed per source (0: none)")
    args = parser.parse_args(argv)
    import onnxruntime  # noqa: PLC0415 - its version, for the record

    load = os.getloadavg()
    starts = {}
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "digit.png"  # the first test digit, white on black as MNIST stores it
        first = json.loads((args.exports[0] / "export.json").read_text())["data_root"]
        Image.fromarray(read_digits(Path(first), train=False)[0][0].numpy()).save(image)
        for path in args.exports if args.start_runs else ():
            starts[str(path)] = start_to_answer(path, image, args.start_runs)
    print(json.dumps({
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "load_average_at_start": [round(value, 2) for value in load],
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "threads": {"batch1": 1, "bulk": os.cpu_count()}, "bulk_batch": args.bulk,
        "predict_start_to_answer_s": starts,
        "nets": [bench(path, args.runs, args.bulk) for path in args.exports],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
