"""Where a figure came from: every summary carries the precision, the machine, the package versions, the code
version and the command-line overrides, because the same seed gives different digits on different hardware."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig

from src.core.hardware import cpu_has_native_bf16, device_description, gpu_has_native_bf16

REPO = Path(__file__).resolve().parents[2]


@cache
def code_version() -> dict[str, Any]:
    """The git commit the code ran from, and whether tracked files differed from it (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def overrides() -> list[str]:
    """The command line's overrides of this job (a multirun job's own values), or [] outside Hydra."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def provenance(precision: str, device: torch.device, processes: int = 1) -> dict[str, Any]:
    """The keys every summary.json / eval.json carries beside its figures: `device` names the machine (CPU model,
    threads and bf16 support, or the GPU; `N × ...` for N DDP processes), `precision` what the run computed in.
    Lightning's version is read from its installed metadata: an eval or export does not import it."""
    on_gpu = device.type == "cuda"
    name = device_description(device)
    return {
        "precision": precision,
        "device": name if processes == 1 else f"{processes} × {name}",
        "device_type": device.type,
        "bf16_native": gpu_has_native_bf16() if on_gpu else cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "pytorch_lightning": version("pytorch-lightning"),
            "hydra": hydra.__version__,
        },
        **code_version(),
        "overrides": overrides(),
    }
