"""Checks of a composed config that any entry point makes before it builds anything."""

from __future__ import annotations

from collections.abc import Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.core.errors import UserError


def unset_values(node: DictConfig | ListConfig, path: str = "") -> Iterator[str]:
    """The config paths left at `???`, found without resolving interpolations (one that points at a `???` would
    raise OmegaConf's multi-line error, which is what this check replaces)."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        name = f"{path}.{key}" if path else str(key)
        if OmegaConf.is_missing(node, key):
            yield name
        elif not OmegaConf.is_interpolation(node, key) and OmegaConf.is_config(child := node[key]):
            yield from unset_values(child, name)


def check_all_set(cfg: DictConfig) -> None:
    """One line for the first value the config leaves to the user (`???`), e.g. `ckpt_path` of `src.eval`."""
    unset = next(unset_values(cfg), None)
    if unset is not None:
        raise UserError(f"{unset} has no value (??? in the config); give one on the command line: {unset}=...")
