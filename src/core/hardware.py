"""What the machine can do fast: whether bf16 is native here, and the names that go beside every figure."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

import torch

from src.core.errors import UserError

DEVICES = ("auto", "cpu", "gpu", "cuda")  # what `device=` takes outside training (auto: the GPU where there is one)


def on_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def torch_device(accelerator: str, key: str = "device") -> torch.device:
    """The device `key=accelerator` names, or one line for a name it does not know or a GPU this machine lacks."""
    if accelerator not in DEVICES:
        raise UserError(f"{key}={accelerator} is not one of {', '.join(DEVICES)}")
    if not on_gpu(accelerator):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"{key}={accelerator}, but torch sees no CUDA GPU on this machine; use {key}=cpu (or auto)")
    return torch.device("cuda")


@cache
def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: the instructions that run bf16 natively. oneDNN's own check is not asked: it also says yes
    on AVX-512 CPUs without BF16, where it emulates bf16 (emulated_bf16_warning). x86 only: other CPUs (e.g.
    ARM with BF16) count as not native. Should torch drop these private checks, the answer is no: fp32 is never the
    slow path."""
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def emulated_bf16_warning(precision: str, device: str) -> str | None:
    """One line for bf16 asked of a CPU that only emulates it, instead of a run several times slower in silence."""
    if device != "cpu" or not precision.startswith("bf16") or cpu_has_native_bf16():
        return None
    return (
        f"trainer.precision={precision}: this CPU ({cpu_model()}) has no native bf16 (no AMX or AVX512-BF16), so it "
        "is emulated, several times slower than 32-true (docs/speed.md); trainer.precision=32-true is the fast path "
        "here"
    )


def gpu_has_native_bf16() -> bool:
    """Ampere or later (or ROCm): torch's own check would also say yes on older GPUs, which only emulate bf16."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def native_precision(accelerator: str) -> str:
    """bf16 autocast where the hardware runs bf16 natively (AMX / AVX512-BF16 CPUs, Ampere+ GPUs), else fp32."""
    native = gpu_has_native_bf16() if on_gpu(accelerator) else cpu_has_native_bf16()
    return "bf16-mixed" if native else "32-true"


@cache
def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    """`NVIDIA H100 80GB HBM3` or `AMD EPYC (2 threads, fp32 only)`: which machine a figure was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{cpu_model()} ({threads} thread{'s' if threads > 1 else ''}, {bf16})"
