"""Checkpoints that survive crashes, carry what is needed to rebuild their model anywhere (eval, predict), and can
be handed around safely: they are read with `torch.load(weights_only=True)` only, so a file cannot run code, and a
`_target_` they name must be one of this project's own nets, module, optimisers or schedules.

`python -m src.core.checkpoint OLD.ckpt NEW.ckpt` converts a checkpoint written before that rule (it held
`functools.partial` hyperparameters and a numpy RNG state): it reads only the few globals such a file needs
(an allowlist, still no arbitrary code) and writes the same weights, states and config in today's form.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import pickle
import random
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra._internal import target_policy
from hydra.utils import get_class, instantiate
from lightning_fabric.utilities.types import _PATH
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode
from pytorch_lightning.plugins.io import TorchCheckpointIO

from src.core.errors import UserError
from src.core.files import replaced_atomically

ALLOWED_TARGETS = frozenset({
    "src.mnist.module.MNISTClassifier",
    "src.mnist.distill.Distillation",  # stores the teacher's path; reads it only when a training run starts
    "torch.optim.SGD",
    "torch.optim.Adam",
    "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.OneCycleLR",
})  # fmt: skip
ALLOWED_TARGET_MODULES = ("src.mnist.nets.",)  # every net of the project
# What checkpoints of this project written before the weights-only rule held beyond tensors: the optimiser and
# schedule partials of the hyperparameters (as OmegaConf nodes wrapping Hydra's deferred targets) and the numpy RNG
# state. Read for `convert_legacy` only, never by a run; each is data-only when unpickled (nothing is called).
LEGACY_GLOBALS = [
    functools.partial,
    getattr(target_policy, "_DeferredTarget", functools.partial),  # Hydra >= 1.3.7 wraps partial targets in it
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.lr_scheduler.StepLR,
    torch.optim.lr_scheduler.OneCycleLR,
    DictConfig,
    ListConfig,
    AnyNode,
    ContainerMetadata,
    Metadata,
    Any,
    defaultdict,
    dict,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
    (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct,  # numpy 2 moved it
]


def config_items(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) of a nested config of dicts and lists, at every level; list items under the key None."""
    if isinstance(node, dict):
        items: Iterable[tuple[Any, Any]] = node.items()
    else:
        items = ((None, item) for item in node) if isinstance(node, list | tuple) else ()
    for key, value in items:
        yield key, value
        yield from config_items(value)


def defined_in_allowed_module(target: str) -> bool:
    """`src.mnist.nets.CompactGapNet`, not `src.mnist.nets.torch.load`: Hydra resolves a dotted path through
    whatever a module imports, so only a name the module itself defines is one of the project's nets."""
    for prefix in ALLOWED_TARGET_MODULES:
        name = target.removeprefix(prefix)
        if name != target and name.isidentifier():
            module = importlib.import_module(prefix.removesuffix("."))
            return getattr(getattr(module, name, None), "__module__", None) == module.__name__
    return False


def check_targets(run_config: Any, path: Path, key: str = "ckpt_path") -> None:
    """A checkpoint's config may only name the project's own classes: instantiating any other callable could run
    anything (Hydra's own blocklist stops `os.system`, not every callable). Nor may it hold an interpolation: Hydra
    resolves them before it instantiates, and `${oc.create:...}` makes a node with a `_target_` no check has seen."""
    for name, value in config_items(run_config):
        if isinstance(value, str) and "${" in value:
            raise UserError(
                f"{key}={path} holds the interpolation {value!r}: a run saves its config resolved, and resolving "
                "this one could build any object; not loaded"
            )
        target = str(value)
        if name == "_target_" and target not in ALLOWED_TARGETS and not defined_in_allowed_module(target):
            allowed = ", ".join([*sorted(ALLOWED_TARGETS), *(f"{prefix}*" for prefix in ALLOWED_TARGET_MODULES)])
            raise UserError(f"{key}={path} names _target_={target!r}, which is not one of {allowed}; not loaded")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through `replaced_atomically` (Lightning writes the target file directly), read back through
    `load_checkpoint`'s checks when a run resumes."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(target) as partial:
            super().save_checkpoint(checkpoint, partial, storage_options)

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path)


class RunConfigInCheckpoint(pl.Callback):
    """Stores the resolved `model` config, recipe, seed, the net's class and settings, the training split and the
    settings that decide what the run learns in every checkpoint (plain dicts, lists, strings and numbers), so that
    `src.eval` and `src.predict` rebuild the net from the checkpoint alone and a resumed run checks its settings."""

    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["run_config"] = self.run_config


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint on the CPU (whatever device saved it), read with `weights_only=True` (tensors and plain
    containers, no code), its `_target_`s checked; or one line, naming the setting `key` that gave the path,
    saying why it is refused."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{key}={path} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{key}={path} holds Python objects beyond tensors and plain data, and is not loaded (unpickling "
            "them could run code); if it is this project's checkpoint from before November 2026 and you trust it, "
            f"convert it: python -m src.core.checkpoint {path} NEW.ckpt"
        ) from None
    except Exception as error:  # torch raises many types for a non-checkpoint file
        raise UserError(f"{key}={path} is not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{key}={path} is not a Lightning checkpoint (no state_dict)")
    check_targets(checkpoint.get("run_config"), path, key)
    return checkpoint


def check_fits(model: pl.LightningModule, checkpoint: dict[str, Any], path: str | Path, key: str = "ckpt_path") -> None:
    """Loads the checkpoint's weights, or says in one line which net it holds (not a size-mismatch traceback)."""
    shapes = {name: tuple(value.shape) for name, value in checkpoint["state_dict"].items()}
    if shapes == {name: tuple(value.shape) for name, value in model.state_dict().items()}:
        model.load_state_dict(checkpoint["state_dict"])
        return
    saved = checkpoint.get("run_config")
    if saved:
        # Its class and the settings that rebuild it; checkpoints from before December 2026 have only the target.
        target = saved["model"]["net"]["_target_"]
        net = saved.get("net") or {"class": target.rsplit(".", 1)[-1], "settings": {}}
        settings = "".join(f" model.net.{key}={json.dumps(value, separators=(',', ':'))}" for key, value in
                           settings_with_defaults(target, net["settings"]).items())  # fmt: skip
        holds = f"holds recipe {saved['recipe']}'s {net['class']}; use model={saved['recipe']}{settings}"
    else:
        holds = "holds weights of another net"
    raise UserError(f"{key}={path} does not fit this run's {type(model.net).__name__}: it {holds}")


def settings_with_defaults(target: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's net settings, those added to the net since it was written (`separable`) at their defaults, which
    is what the run had: a hint that names only the stored ones would build today's recipe value instead (`tiny`'s
    separable body). Rebuilding checks them too; settings no net of `target` takes are named as stored."""
    if not settings:
        return settings
    try:
        return get_class(target)(**settings).settings
    except (TypeError, ValueError, UserError):
        return settings


def stored_split(checkpoint: dict[str, Any], path: str | Path, key: str, remedy: str) -> dict[str, int]:
    """The training split the checkpoint's run held out (`val_split`, `split_seed`), as the run stored it; one line,
    naming the setting `key` that gave the path and what to do instead, if the checkpoint predates storing it."""
    split = (checkpoint.get("run_config") or {}).get("data")
    if split is None:
        raise UserError(
            f"{key}={path} does not say which training images its run held out (written before December 2026); {remedy}"
        )
    return split


def model_from_checkpoint(
    path: str | Path, key: str = "ckpt_path", model_overrides: Mapping[str, Any] | None = None
) -> tuple[pl.LightningModule, dict[str, Any]]:
    """The trained model (eval mode) and the checkpoint it came from. `model_overrides` replace settings of the
    stored model config that do not touch the weights (e.g. `test_time_shifts`), checked as the model checks them."""
    checkpoint = load_checkpoint(path, key)
    run_config = checkpoint.get("run_config")
    if run_config is None:
        raise UserError(f"{key}={path} has no run_config: it was not written by src.train, so its net is unknown")
    model = instantiate({**run_config["model"], **(model_overrides or {})})
    check_fits(model, checkpoint, path, key)
    return model.eval(), checkpoint


def capture_rng_states() -> dict[str, Any]:
    """Python's, numpy's and torch's random states as tensors and plain data (numpy's own form is an ndarray, which
    a weights-only load refuses)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": numpy_state_as_tensors(("MT19937", keys, position, has_gauss, cached_gaussian)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def numpy_state_as_tensors(state: tuple) -> dict[str, Any]:
    _, keys, position, has_gauss, cached_gaussian = state
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


MOVED_MODULES = {"src.module.": "src.mnist.module.", "src.nets.": "src.mnist.nets."}  # before src/ had rooms


def moved_targets(node: Any) -> Any:
    """The config with `_target_`s of the earlier flat layout (`src.nets.X`) renamed to where they live now."""
    if isinstance(node, dict):
        moved = {key: moved_targets(value) for key, value in node.items()}
        target = str(moved.get("_target_", ""))
        for old, new in MOVED_MODULES.items():
            if target.startswith(old):
                moved["_target_"] = new + target.removeprefix(old)
        return moved
    if isinstance(node, list):
        return [moved_targets(value) for value in node]
    return node


def convert_legacy(source: Path, target: Path) -> None:
    """Rewrites a checkpoint of the earlier form in today's: hyperparameters dropped (the run config holds them as
    plain data), the numpy RNG state as a tensor. Reads with `weights_only=True` plus `LEGACY_GLOBALS` only."""
    with torch.serialization.safe_globals(LEGACY_GLOBALS):
        try:
            checkpoint = torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            reason = str(error).splitlines()[-1] if str(error) else type(error).__name__
            raise UserError(f"{source} needs more than an earlier checkpoint of this project: {reason}") from None
    checkpoint.pop("hyper_parameters", None)
    checkpoint.pop("hparams_name", None)
    states = checkpoint.get("rng_states")
    if states is not None and isinstance(states.get("numpy"), tuple):
        states["numpy"] = numpy_state_as_tensors(states["numpy"])
    if checkpoint.get("run_config"):
        checkpoint["run_config"] = moved_targets(checkpoint["run_config"])
    check_targets(checkpoint.get("run_config"), source)
    with replaced_atomically(target) as partial:
        torch.save(checkpoint, partial)
    load_checkpoint(target)  # today's reader accepts it


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert an earlier checkpoint of this project to today's form.")
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.target.exists():
        sys.exit(f"error: {args.target} exists; give a new file name (nothing is overwritten)")
    try:
        convert_legacy(args.source, args.target)
    except UserError as error:
        sys.exit(f"error: {error}")
    print(f"converted: {args.target}")


if __name__ == "__main__":
    main()
