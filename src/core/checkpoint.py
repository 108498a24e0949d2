"""Checkpoints that survive crashes and can be handed around safely: they are read with
`torch.load(weights_only=True)` only, so a file cannot run code, and every `_target_` in the config they carry must
be on an allowlist the task gives (this module knows no task). Torch alone: reading a checkpoint imports no Lightning
(its saving side is `src.core.checkpoint_io`)."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Iterable, Iterator, Set
from pathlib import Path
from typing import Any

import torch

from src.core.errors import UserError

CONFIG_KEY = "run_config"  # where a checkpoint carries its run's config, the part whose targets are checked


def config_items(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) of a nested config of dicts and lists, at every level; list items under the key None."""
    if isinstance(node, dict):
        items: Iterable[tuple[Any, Any]] = node.items()
    else:
        items = ((None, item) for item in node) if isinstance(node, list | tuple) else ()
    for key, value in items:
        yield key, value
        yield from config_items(value)


def check_targets(config: Any, allowed_targets: Set[str], path: Path, key: str = "ckpt_path") -> None:
    """A checkpoint's config may only name `allowed_targets`: instantiating any other callable could run anything
    (Hydra's own blocklist stops `os.system`, not every callable). Nor may it hold an interpolation: Hydra resolves
    them before it instantiates, and `${oc.create:...}` makes a node with a `_target_` no check has seen."""
    for name, value in config_items(config):
        if isinstance(value, str) and "${" in value:
            raise UserError(
                f"{key}={path} holds the interpolation {value!r}: a run saves its config resolved, and resolving "
                "this one could build any object; not loaded"
            )
        if name == "_target_" and str(value) not in allowed_targets:
            allowed = ", ".join(sorted(allowed_targets))
            raise UserError(f"{key}={path} names _target_={value!r}, which is not one of {allowed}; not loaded")


def checkpoint_bytes(path: str | Path, key: str = "ckpt_path") -> bytes:
    """The file's contents, read once: what is hashed is what is loaded."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{key}={path} is not a file")
    return path.read_bytes()


def load_checkpoint(
    path: str | Path, allowed_targets: Set[str], key: str = "ckpt_path", contents: bytes | None = None
) -> dict[str, Any]:
    """The checkpoint on the CPU (whatever device saved it), read with `weights_only=True` (tensors and plain
    containers, no code), the `_target_`s of its config checked against `allowed_targets`; or one line, naming the
    setting `key` that gave the path, saying why it is refused. `contents`: the file's bytes, where already read."""
    path = Path(path).expanduser()
    if contents is None:
        contents = checkpoint_bytes(path, key)
    try:
        checkpoint = torch.load(io.BytesIO(contents), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not zipfile.is_zipfile(io.BytesIO(contents)):  # torch.save writes a zip archive; garbage fails to unpickle
            raise UserError(f"{key}={path} is not a readable checkpoint (not a file torch.save wrote)") from None
        raise UserError(
            f"{key}={path} holds Python objects beyond tensors and plain data, and is not loaded (unpickling them "
            "could run code)"
        ) from None
    except Exception as error:  # torch raises many types for a non-checkpoint file
        raise UserError(f"{key}={path} is not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{key}={path} is not a Lightning checkpoint (no state_dict)")
    check_targets(checkpoint.get(CONFIG_KEY), allowed_targets, path, key)
    return checkpoint
