"""`python -m src.bench` (`make bench`): training and evaluation throughput of the `dropout_steplr` recipe, side by
side in one invocation (interleaved rounds, so that all variants share the machine's state):

  (a) reference: a plain PyTorch loop written as the published notebooks write it (torchvision MNIST, per-sample
      PIL transforms, DataLoader, SGD, a tqdm bar with the loss every step), fp32;
  (b) `src.train data.pipeline=torchvision trainer.precision=32-true` (the conventional Lightning path);
  (c32) `src.train data.pipeline=tensor trainer.precision=32-true` (data on the device, batched augmentation): the
      default wherever bf16 is not native, and run everywhere, so the figure for plain CPUs is always there;
  (c16) the same in `bf16-mixed`, the default where bf16 is native; skipped where it would only be emulated.

Each variant runs in its own process for the same number of training steps; the figures are medians over rounds.
It prints the machine (CPU model, threads, native bf16, GPU), the precision of each variant, images per second,
the ratios to (a) and one JSON line. `--device cuda` runs (b), (c) and the bare steps on the GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src.core.logs import quiet_known_noise
from src.core.rundirs import CONF_DIR

REFERENCE, TORCHVISION, TENSOR_FP32, TENSOR_BF16 = "a_reference", "b_torchvision", "c32_tensor", "c16_tensor"
PRECISION = {REFERENCE: "32-true", TORCHVISION: "32-true", TENSOR_FP32: "32-true", TENSOR_BF16: "bf16-mixed"}
PIPELINE = {TORCHVISION: "torchvision", TENSOR_FP32: "tensor", TENSOR_BF16: "tensor"}


def augmentation(name: str = "seed_affine") -> list:
    """An `augmentation` config group's transforms (by default write-up 001's, which all variants use), read from
    the group's own file so that the bench times what a run would apply."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return list(instantiate(OmegaConf.load(CONF_DIR / "augmentation" / f"{name}.yaml").transforms))


def reference_loop(steps: int, batch_size: int, device: str) -> dict[str, float]:
    """The published notebooks' loop, timed from its first batch to its last step, then their test loop."""
    import torch
    from torch.nn import functional as F
    from torchvision import datasets, transforms
    from tqdm import tqdm

    from src.mnist.images import MNIST_MEAN, MNIST_STD
    from src.mnist.nets import DropoutGapNet

    torch.manual_seed(1)
    root = data_root()
    normalise = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    train_set = datasets.MNIST(root, train=True, transform=transforms.Compose(augmentation() + normalise))
    test_set = datasets.MNIST(root, train=False, transform=transforms.Compose(normalise))
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size, shuffle=False)
    model = DropoutGapNet().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    model.train()
    start = time.perf_counter()
    progress = tqdm(train_loader, total=steps, file=sys.stderr)
    for batch_idx, (data, target) in enumerate(progress):
        data, target = data.to(device), target.to(device)
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
            F.nll_loss(model(data.to(device)), target.to(device), reduction="sum").item()
    return {"train_seconds": train_seconds, "test_seconds": time.perf_counter() - start}


def data_root() -> Path:
    """Where every variant reads MNIST: conf/data/mnist.yaml's `root` (DATA_DIR, or data/), as `src.train` reads it."""
    from omegaconf import OmegaConf

    return Path(OmegaConf.load(CONF_DIR / "data" / "mnist.yaml").root)


def checked_test_images() -> int:
    """The files every variant needs, checked (or downloaded) once before anything is timed, as a run does (a missing
    or broken file is one line here, not a failed variant minutes later); returns how many test images they hold."""
    from src.core.cli import one_line_exit
    from src.mnist.data import MNISTDataModule
    from src.mnist.files import idx_shape

    root = data_root()
    try:
        MNISTDataModule(root=str(root)).prepare_data()
    except Exception as error:  # a UserError is one line; anything else is a bug, re-raised by one_line_exit
        raise one_line_exit(error) from None
    return idx_shape(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[0]


def run_checked(command: list[str], variant: str) -> str:
    """Runs one variant's process and returns its stdout. If it fails on bad input (its `error: ...` line), the bench
    stops with that line; on anything else (a bug) the process's whole stderr is shown first."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return result.stdout
    status = f"killed by signal {-result.returncode}" if result.returncode < 0 else f"status {result.returncode}"
    reasons = [line.removeprefix("error: ") for line in result.stderr.splitlines() if line.startswith("error: ")]
    if not reasons:
        sys.stderr.write(result.stderr)
    reason = reasons[-1] if reasons else "its output is above" if result.stderr.strip() else "no output"
    sys.exit(f"error: variant {variant} stopped ({status}): {reason}")


def bare_step_rates(
    steps: int, batch_size: int, device: str, bf16_native: bool, with_compile: bool
) -> dict[str, float]:
    """The dropout_steplr training step alone, on ready tensors, and the batched augmentation alone: what each
    costs without data loading or Lightning around it. The compiled steps' compile seconds are reported apart
    (`with_compile=False` leaves them out: a cold compile takes tens of seconds)."""
    import torch
    from torch.nn import functional as F

    from src.mnist.augment import BatchAugment
    from src.mnist.images import IMAGE_SIZE
    from src.mnist.nets import DropoutGapNet

    torch.manual_seed(0)
    images = torch.randn(batch_size, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    variants = [("step fp32", False, torch.contiguous_format, False),
                ("step fp32, channels_last", False, torch.channels_last, False)]  # fmt: skip
    if with_compile:
        variants.append(("step fp32, torch.compile", False, torch.contiguous_format, True))
    if bf16_native:
        variants.append(("step bf16 autocast", True, torch.contiguous_format, False))
        if with_compile:
            variants.append(("step bf16 autocast, torch.compile", True, torch.contiguous_format, True))
    elif device == "cpu":  # what asking for bf16 costs here: the slowdown the one-line warning quotes
        variants.append(("step bf16 autocast (emulated)", True, torch.contiguous_format, False))
    rates = {}
    for label, autocast, memory_format, compiled in variants:
        net = DropoutGapNet().to(device, memory_format=memory_format)
        model = torch.compile(net) if compiled else net
        batch = images.contiguous(memory_format=memory_format)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        start = time.perf_counter()
        for step in range(steps + 10):  # 10 warm-up steps (compilation happens there)
            if step == 10:
                synchronize(device)
                if compiled:
                    rates[f"{label}: compile seconds"] = time.perf_counter() - start
                start = time.perf_counter()
            optimizer.zero_grad()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                log_probs = model(batch)
            F.nll_loss(log_probs.float(), labels).backward()
            optimizer.step()
        synchronize(device)
        rates[label] = steps * batch_size / (time.perf_counter() - start)
    unit = torch.rand(batch_size, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
    for name in ("seed_affine", "elastic"):
        augment = BatchAugment(augmentation(name))
        start = time.perf_counter()
        for _ in range(steps):
            augment(unit)
        synchronize(device)
        rates[f"batched augmentation ({name})"] = steps * batch_size / (time.perf_counter() - start)
    return rates


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_variant(variant: str, steps: int, batch_size: int, device: str, workdir: Path) -> dict[str, float]:
    """Runs one variant in a fresh process; returns its training and test seconds."""
    if variant == REFERENCE:
        command = [sys.executable, "-m", "src.bench", "--reference", f"--steps={steps}", f"--batch-size={batch_size}",
                   f"--device={device}"]  # fmt: skip
        return json.loads(run_checked(command, variant).strip().splitlines()[-1])
    run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix=variant))
    command = [
        sys.executable, "-m", "src.train", "model=dropout_steplr", f"data.batch_size={batch_size}", "logger=none",
        "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "callbacks.best_checkpoint=null",
        "callbacks.last_checkpoint=null", f"hydra.run.dir={run_dir}", f"data.pipeline={PIPELINE[variant]}",
        f"trainer.precision={PRECISION[variant]}", f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
    ]  # fmt: skip
    run_checked(command, variant)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"train_seconds": summary["per_epoch"][0]["seconds"], "test_seconds": summary["test_seconds"]}


def machine(device: str) -> dict[str, object]:
    """What the figures were measured on: they differ several-fold between CPUs with and without native bf16."""
    import torch

    from src.core.hardware import cpu_has_native_bf16, cpu_model, gpu_has_native_bf16

    on_gpu = device == "cuda"
    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "gpu": torch.cuda.get_device_name() if on_gpu else None,
        "gpu_bf16": gpu_has_native_bf16() if on_gpu else None,  # native only, as cpu_native_bf16
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    quiet_known_noise()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (938 = one full epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="leave out the bare torch.compile steps")
    parser.add_argument("--variants", default=",".join(PRECISION), help="which to run, comma-separated ((a) always)")
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.batch_size < 1:
        sys.exit(f"error: --steps={args.steps}, --repeats={args.repeats}, --batch-size={args.batch_size} must be >= 1")
    chosen = {name.strip() for name in args.variants.split(",") if name.strip()} | {REFERENCE}  # the ratios' base
    if chosen - set(PRECISION):
        sys.exit(f"error: --variants={args.variants} names {', '.join(sorted(chosen - set(PRECISION)))}; the variants "
                 f"are {', '.join(PRECISION)}")  # fmt: skip
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device=cuda but torch sees no GPU here; run without --device for the CPU figures")
    if args.reference:
        print(json.dumps(reference_loop(args.steps, args.batch_size, args.device)))
        return

    test_images = checked_test_images()
    hardware = machine(args.device)
    native_bf16 = hardware["gpu_bf16"] if args.device == "cuda" else hardware["cpu_native_bf16"]
    threads = f"{hardware['threads']} thread{'s' if hardware['threads'] != 1 else ''}"
    print(f"machine: {hardware['cpu']}, {threads}, native bf16 on the CPU: "
          f"{'yes' if hardware['cpu_native_bf16'] else 'no'}; GPU: {hardware['gpu'] or 'none used'}; "
          f"torch {hardware['torch']}")  # fmt: skip
    variants = [name for name in (REFERENCE, TORCHVISION, TENSOR_FP32, TENSOR_BF16) if name in chosen]
    if TENSOR_BF16 in chosen and not native_bf16:
        variants.remove(TENSOR_BF16)
        timed = " (the emulated bare step is timed below)" if args.device == "cpu" else ""
        print(f"{TENSOR_BF16} skipped: bf16 is only emulated on this {args.device.upper()}{timed}")
    images = args.steps * args.batch_size
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(1, args.repeats + 1):
            for variant in results:
                seconds = run_variant(variant, args.steps, args.batch_size, args.device, Path(workdir))
                results[variant].append(seconds)
                print(f"round {repeat} {variant:14s} {images / seconds['train_seconds']:7.0f} train img/s", flush=True)

    train_rate = {v: statistics.median(images / r["train_seconds"] for r in runs) for v, runs in results.items()}
    test_rate = {v: statistics.median(test_images / r["test_seconds"] for r in runs) for v, runs in results.items()}
    print(f"\n{'variant':16s} {'precision':>10s} {'train img/s':>12s} {'eval img/s':>11s} {'train vs (a)':>13s}")
    for variant in results:
        ratio = train_rate[variant] / train_rate[REFERENCE]
        print(f"{variant:16s} {PRECISION[variant]:>10s} {train_rate[variant]:12.0f} {test_rate[variant]:11.0f} "
              f"{ratio:12.2f}x")  # fmt: skip
    ratios = {f"{variant.split('_')[0]}/a": train_rate[variant] / train_rate[REFERENCE] for variant in variants[1:]}
    step_rates = bare_step_rates(args.steps, args.batch_size, args.device, bool(native_bf16), not args.no_compile)
    print("\nalone, on ready tensors (no data loading, no Lightning):")
    for label, rate in step_rates.items():
        unit = "s" if label.endswith("seconds") else "img/s"
        print(f"  {label:44s} {rate:8.0f} {unit}")
    shown = ", ".join(f"{name} = {ratio:.2f}x" for name, ratio in ratios.items())
    print(f"\ntrain speed-up {shown} ({args.steps} steps of batch {args.batch_size}, median of {args.repeats})")
    print(json.dumps({
        "machine": hardware, "device": args.device, "steps": args.steps, "batch_size": args.batch_size,
        "repeats": args.repeats, "precision": {variant: PRECISION[variant] for variant in variants},
        "train_img_per_s": train_rate, "eval_img_per_s": test_rate, "ratios": ratios,
        "step_alone_img_per_s": step_rates, "runs": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
