"""The task-free safe loader (src.core.checkpoint): a file cannot run code when read, its config may name only the
targets the caller allows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.core.checkpoint import load_checkpoint
from src.core.errors import UserError

ALLOWED = frozenset({"torch.nn.Linear"})


def saved(tmp_path: Path, config: object) -> Path:
    path = tmp_path / "some.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "run_config": config}, path)
    return path


def test_a_config_naming_only_allowed_targets_loads(tmp_path: Path) -> None:
    config = {"model": {"_target_": "torch.nn.Linear", "in_features": 2, "layers": [{"_target_": "torch.nn.Linear"}]}}
    checkpoint = load_checkpoint(saved(tmp_path, config), ALLOWED)
    assert checkpoint["run_config"] == config and torch.equal(checkpoint["state_dict"]["w"], torch.ones(2))


@pytest.mark.parametrize(
    "config",
    [
        {"_target_": "os.system"},
        {"model": {"optimizer": {"_target_": "builtins.exec"}}},  # every level is checked
        {"model": {"layers": [{"_target_": "subprocess.run"}]}},  # list items too
    ],
)
def test_a_target_the_caller_does_not_allow_is_refused(config: dict, tmp_path: Path) -> None:
    path = saved(tmp_path, config)
    with pytest.raises(UserError, match=r"names _target_='(os\.system|builtins\.exec|subprocess\.run)', which is not "
                       r"one of torch\.nn\.Linear; not loaded"):  # fmt: skip
        load_checkpoint(path, ALLOWED)
    assert load_checkpoint(path, ALLOWED | {"os.system", "builtins.exec", "subprocess.run"})  # allowed, it loads


def test_an_interpolation_is_refused(tmp_path: Path) -> None:
    path = saved(tmp_path, {"net": {"width": "${oc.create:{_target_: os.system}}"}})
    with pytest.raises(UserError, match=r"holds the interpolation '\$\{oc\.create:.*; not loaded$"):
        load_checkpoint(path, ALLOWED)


def test_a_pickle_payload_is_refused_and_runs_nothing(pickle_payload: tuple[Path, Path]) -> None:
    checkpoint, marker = pickle_payload
    with pytest.raises(UserError, match="holds Python objects beyond tensors and plain data, and is not loaded"):
        load_checkpoint(checkpoint, ALLOWED, key="distill.checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "is not a file"), (b"not a checkpoint", "is not a readable checkpoint"), ({"epoch": 1}, "no state_dict")],
)
def test_what_is_not_a_checkpoint_is_one_line_naming_the_key(content: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "given.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserError, match=f"^teacher={path} .*{message}"):
        load_checkpoint(path, ALLOWED, key="teacher")
