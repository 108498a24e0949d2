"""A checkpoint someone hands you cannot run code: not through pickle, not through a `_target_` in its config, in
eval, predict or resume; and a checkpoint of the earlier form converts through an allowlist only."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.core.checkpoint import load_checkpoint, model_from_checkpoint
from src.core.checkpoint import main as convert_main
from src.core.errors import UserError, one_line_exit
from src.eval import evaluate
from src.mnist.run import train
from src.predict import predict
from tests.conftest import REPO, cli_in_process, compose_task, compose_train


class ShellOnUnpickle:
    """What a malicious checkpoint holds: unpickling it calls os.system, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def pickle_payload(tmp_path: Path) -> tuple[Path, Path]:
    marker, checkpoint = tmp_path / "payload_ran", tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "run_config": ShellOnUnpickle(marker)}, checkpoint)
    return checkpoint, marker


def with_foreign_target(trained_run: Path, tmp_path: Path, where: str) -> tuple[Path, Path]:
    """The shared run's real checkpoint with one `_target_` replaced by a callable that would create the marker."""
    marker, checkpoint = tmp_path / "target_ran", tmp_path / f"foreign_{where}.ckpt"
    state = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    foreign = {"_target_": "subprocess.run", "args": ["touch", str(marker)]}
    if where == "net":
        state["run_config"]["model"]["net"] = foreign
    elif where == "through_nets":  # a name the nets module imports, not one of its nets
        state["run_config"]["model"]["net"] = {"_target_": "src.mnist.nets.torch.save", "obj": 0, "f": str(marker)}
    elif where == "interpolation":  # a node with a `_target_` that only Hydra's resolving would make
        node = f"{{_target_: torch.save, obj: 0, f: '{marker}'}}"
        state["run_config"]["model"]["net"]["stem"] = f'${{oc.create:"{node}"}}'
    else:  # nested below the optimiser: every level is checked, not only the top
        state["run_config"]["model"]["optimizer"] = {"_target_": "builtins.exec", "_args_": [f"open('{marker}','w')"]}
    torch.save(state, checkpoint)
    return checkpoint, marker


def eval_entry(checkpoint: Path, data: Path, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"ckpt_path={checkpoint}", f"data.root={data}"])
    evaluate(cfg, tmp_path)


def predict_entry(checkpoint: Path, data: Path, tmp_path: Path) -> None:
    image = tmp_path / "digit.png"
    image.write_bytes(b"not needed: the checkpoint is refused first")
    predict(checkpoint, image)


def resume_entry(checkpoint: Path, data: Path, tmp_path: Path) -> None:
    cfg = compose_task("model=record", f"ckpt_path={checkpoint}", f"data.root={data}", "logger=none")
    train(cfg, tmp_path)


ENTRIES: dict[str, Callable[[Path, Path, Path], None]] = {
    "eval": eval_entry,
    "predict": predict_entry,
    "resume": resume_entry,
}


@pytest.mark.parametrize("entry", ENTRIES)
def test_pickle_payload_is_refused_and_runs_nothing(
    entry: str, pickle_payload: tuple[Path, Path], tiny_mnist: Path, tmp_path: Path
) -> None:
    checkpoint, marker = pickle_payload
    with pytest.raises(UserError, match="not loaded") as refused:
        ENTRIES[entry](checkpoint, tiny_mnist, tmp_path)
    assert not marker.exists()
    assert "\n" not in str(one_line_exit(refused.value))


@pytest.mark.parametrize("where", ["net", "optimizer", "through_nets"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_foreign_target_is_refused_and_runs_nothing(
    entry: str, where: str, trained_run: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    checkpoint, marker = with_foreign_target(trained_run, tmp_path, where)
    foreign = r"(subprocess\.run|builtins\.exec|src\.mnist\.nets\.torch\.save)"
    with pytest.raises(UserError, match=rf"names _target_='{foreign}', which is not one of"):
        ENTRIES[entry](checkpoint, tiny_mnist, tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("entry", ENTRIES)
def test_interpolation_is_refused_and_runs_nothing(
    entry: str, trained_run: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    checkpoint, marker = with_foreign_target(trained_run, tmp_path, "interpolation")
    with pytest.raises(UserError, match=r"holds the interpolation '\$\{oc\.create:.*not loaded$"):
        ENTRIES[entry](checkpoint, tiny_mnist, tmp_path)
    assert not marker.exists()


def test_eval_command_refuses_a_pickle_payload_in_one_line(
    pickle_payload: tuple[Path, Path], tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m src.eval`, `__main__` block and Hydra included, in this process (the exit-status contract of the
    eval command is tested in a new interpreter by test_eval_predict)."""
    checkpoint, marker = pickle_payload
    error = cli_in_process("src.eval", f"ckpt_path={checkpoint}", f"hydra.run.dir={checkpoint.parent / 'eval'}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error is not None and error.startswith(f"error: ckpt_path={checkpoint} holds Python objects beyond tensors")
    assert "\n" not in error and not marker.exists()


def legacy_checkpoint(trained_run: Path, path: Path) -> dict:
    """The shared run's checkpoint in the form src.train wrote before weights-only loading: Hydra partials and
    OmegaConf nodes in `hyper_parameters`, numpy's RNG state as an ndarray, the flat `src.nets` layout."""
    state = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    optimizer = instantiate(compose_train("model=record").optimizer)
    assert isinstance(optimizer, functools.partial)
    state["hyper_parameters"] = {"optimizer": optimizer, "scheduler": OmegaConf.create({"interval": "step"})}
    state["rng_states"]["numpy"] = np.random.get_state()
    state["run_config"]["model"]["_target_"] = "src.module.MNISTClassifier"
    state["run_config"]["model"]["net"]["_target_"] = "src.nets.CompactGapNet"
    torch.save(state, path)
    return state


def test_earlier_checkpoint_gets_one_line_naming_the_conversion_which_then_loads(
    trained_run: Path, tmp_path: Path
) -> None:
    old, new = tmp_path / "old.ckpt", tmp_path / "new.ckpt"
    state = legacy_checkpoint(trained_run, old)
    with pytest.raises(UserError, match=f"python -m src.core.checkpoint {old} NEW.ckpt"):
        load_checkpoint(old)

    convert_main([str(old), str(new)])
    model, converted = model_from_checkpoint(new)
    assert type(model.net).__name__ == "CompactGapNet"
    assert converted["run_config"]["model"]["net"]["_target_"] == "src.mnist.nets.CompactGapNet"
    assert "hyper_parameters" not in converted
    assert converted["rng_states"]["numpy"]["keys"].tolist() == state["rng_states"]["numpy"][1].tolist()
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["state_dict"][name])

    with pytest.raises(SystemExit, match="exists"):  # nothing a user made is overwritten
        convert_main([str(old), str(new)])


def test_conversion_refuses_a_pickle_payload(pickle_payload: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, marker = pickle_payload
    with pytest.raises(SystemExit, match="needs more than an earlier checkpoint of this project"):
        convert_main([str(checkpoint), str(tmp_path / "converted.ckpt")])
    assert not marker.exists() and not (tmp_path / "converted.ckpt").exists()
