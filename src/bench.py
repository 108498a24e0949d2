"""`python -m src.bench` (`make bench`): training and evaluation throughput of the `dropout_steplr` recipe, three ways,
interleaved in one invocation so that they share the machine's state:

  (a) reference: a plain PyTorch loop written as the published notebooks write it (torchvision MNIST, per-sample
      PIL transforms, DataLoader, SGD, a tqdm bar with the loss every step);
  (b) `src.train data.pipeline=torchvision trainer.precision=32-true` (the conventional Lightning path);
  (c) `src.train data.pipeline=tensor trainer.precision=bf16-mixed` (data on the device, batched augmentation,
      bf16 autocast; the defaults).

Each variant runs in its own process for the same number of training steps; the figures are medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE, TORCHVISION, TENSOR = "a_reference", "b_torchvision", "c_tensor"
SEED_AFFINE_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "augmentation" / "seed_affine.yaml"
RECIPE_OVERRIDES = {
    TORCHVISION: ["data.pipeline=torchvision", "trainer.precision=32-true"],
    TENSOR: ["data.pipeline=tensor", "trainer.precision=bf16-mixed"],
}


def seed_affine() -> list:
    """Write-up 001's augmentation, read from the recipe's own config group so that all variants use the same one."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return list(instantiate(OmegaConf.load(SEED_AFFINE_CONFIG).transforms))


def reference_loop(steps: int, batch_size: int) -> dict[str, float]:
    """The published notebooks' loop, timed from its first batch to its last step, then their test loop."""
    import torch
    from torch.nn import functional as F
    from torchvision import datasets, transforms
    from tqdm import tqdm

    from src.mnist.data import MNIST_MEAN, MNIST_STD
    from src.mnist.nets import DropoutGapNet

    torch.manual_seed(1)
    root = os.environ.get("DATA_DIR", "data")
    normalise = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    train_set = datasets.MNIST(root, train=True, transform=transforms.Compose(seed_affine() + normalise))
    test_set = datasets.MNIST(root, train=False, transform=transforms.Compose(normalise))
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size, shuffle=False)
    model = DropoutGapNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    model.train()
    start = time.perf_counter()
    progress = tqdm(train_loader, total=steps, file=sys.stderr)
    for batch_idx, (data, target) in enumerate(progress):
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        progress.set_description(desc=f"loss={loss.item()} batch_id={batch_idx}")
        if batch_idx + 1 == steps:
            break
    train_seconds = time.perf_counter() - start

    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for data, target in test_loader:
            F.nll_loss(model(data), target, reduction="sum")
    return {"train_seconds": train_seconds, "test_seconds": time.perf_counter() - start}


def bare_step_rates(steps: int, batch_size: int) -> dict[str, float]:
    """The dropout_steplr training step alone, on ready tensors, and the batched augmentation alone: what each
    costs without data loading or Lightning around it."""
    import torch
    from torch.nn import functional as F

    from src.mnist.augment import BatchAugment
    from src.mnist.nets import DropoutGapNet

    torch.manual_seed(0)
    images, labels = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    rates = {}
    for label, bf16, memory_format, compiled in (
        ("step fp32", False, torch.contiguous_format, False),
        ("step bf16 autocast", True, torch.contiguous_format, False),
        ("step bf16 autocast, channels_last", True, torch.channels_last, False),
        ("step bf16 autocast, torch.compile", True, torch.contiguous_format, True),
    ):
        net = DropoutGapNet().to(memory_format=memory_format)
        model = torch.compile(net) if compiled else net
        batch = images.contiguous(memory_format=memory_format)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        for step in range(steps + 10):  # 10 warm-up steps (compilation happens there)
            if step == 10:
                start = time.perf_counter()
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                log_probs = model(batch)
            F.nll_loss(log_probs.float(), labels).backward()
            optimizer.step()
        rates[label] = steps * batch_size / (time.perf_counter() - start)
    augment = BatchAugment(seed_affine())
    unit = torch.rand(batch_size, 1, 28, 28)
    start = time.perf_counter()
    for _ in range(steps):
        augment(unit)
    rates["batched augmentation (seed_affine)"] = steps * batch_size / (time.perf_counter() - start)
    return rates


def run_variant(variant: str, steps: int, batch_size: int, workdir: Path) -> dict[str, float]:
    """Runs one variant in a fresh process; returns its training and test seconds."""
    if variant == REFERENCE:
        command = [sys.executable, "-m", "src.bench", "--reference", f"--steps={steps}", f"--batch-size={batch_size}"]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return json.loads(output.strip().splitlines()[-1])
    run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix=variant))
    command = [
        sys.executable, "-m", "src.train", "model=dropout_steplr", f"data.batch_size={batch_size}", "logger=none",
        "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "~callbacks.best_checkpoint", "~callbacks.last_checkpoint", f"hydra.run.dir={run_dir}",
        *RECIPE_OVERRIDES[variant],
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, text=True, check=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"train_seconds": summary["per_epoch"][0]["seconds"], "test_seconds": summary["test_seconds"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (938 = one full epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved a/b/c rounds")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.batch_size < 1:
        sys.exit(f"error: --steps={args.steps}, --repeats={args.repeats}, --batch-size={args.batch_size} must be >= 1")
    if args.reference:
        print(json.dumps(reference_loop(args.steps, args.batch_size)))
        return

    images = args.steps * args.batch_size
    results: dict[str, list[dict[str, float]]] = {REFERENCE: [], TORCHVISION: [], TENSOR: []}
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(1, args.repeats + 1):
            for variant in results:
                seconds = run_variant(variant, args.steps, args.batch_size, Path(workdir))
                results[variant].append(seconds)
                print(f"round {repeat} {variant:14s} {images / seconds['train_seconds']:7.0f} train img/s", flush=True)

    train_rate = {v: statistics.median(images / r["train_seconds"] for r in runs) for v, runs in results.items()}
    test_rate = {v: statistics.median(10_000 / r["test_seconds"] for r in runs) for v, runs in results.items()}
    print(f"\n{'variant':16s} {'train img/s':>12s} {'eval img/s':>11s}")
    for variant in results:
        print(f"{variant:16s} {train_rate[variant]:12.0f} {test_rate[variant]:11.0f}")
    ratios = {
        "c/a": train_rate[TENSOR] / train_rate[REFERENCE],
        "b/a": train_rate[TORCHVISION] / train_rate[REFERENCE],
    }
    step_rates = bare_step_rates(args.steps, args.batch_size)
    print("\nalone, on ready tensors (no data loading, no Lightning):")
    for label, rate in step_rates.items():
        print(f"  {label:36s} {rate:8.0f} img/s")
    print(f"\ntrain speed-up c/a = {ratios['c/a']:.2f}x, b/a = {ratios['b/a']:.2f}x "
          f"({args.steps} steps of batch {args.batch_size}, median of {args.repeats})")  # fmt: skip
    print(json.dumps({
        "steps": args.steps, "batch_size": args.batch_size, "repeats": args.repeats,
        "train_img_per_s": train_rate, "eval_img_per_s": test_rate, "ratios": ratios,
        "step_alone_img_per_s": step_rates, "runs": results,
        "cpu_threads": os.cpu_count(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
