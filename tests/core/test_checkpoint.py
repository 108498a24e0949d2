"""Checkpoints (src.core.checkpoint): one someone hands you cannot run code, not through pickle, not through a
`_target_` in its config, in eval, predict or resume; one of another net is refused in a line that names the settings
that rebuild it; a crash never leaves half a checkpoint; and one of the earlier form converts through an allowlist
only (the last two tests, which go with the converter)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.core.checkpoint import AtomicCheckpointIO, load_checkpoint, model_from_checkpoint, settings_with_defaults
from src.core.checkpoint import main as convert_main
from src.core.errors import UserError, one_line_exit
from src.eval import evaluate
from src.mnist.run import train
from src.predict import predict
from tests.helpers import REPO, TINY_RUN, cli_in_process, compose_task, compose_train


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


@pytest.mark.parametrize(("net", "run"), [("model=dropout_steplr", "DropoutGapNet"),
                                         ("model.net.body=[14,16,18]", "CompactGapNet"),
                                         ("model.net.separable=3", "CompactGapNet")])  # fmt: skip
def test_checkpoint_of_another_net_is_refused_in_one_line(
    net: str, run: str, trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    """Another recipe's net, or the same recipe's with other widths (a layout search's trial) or other separable
    convs (`record`'s last two are; a trial's may be all, or none): the line names every setting that rebuilds the
    checkpoint's."""
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    error = cli_in_process("src.train", "model=record", net, *TINY_RUN, f"ckpt_path={ckpt}",
                           f"runs_dir={tmp_path}", data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    widths = compose_train("model=record").model.net  # conf/model/record.yaml's
    settings = " ".join(
        f"model.net.{key}={widths[key]}".replace(" ", "") for key in ("stem", "squeeze", "body", "separable")
    )
    assert error == (
        f"error: ckpt_path={ckpt} does not fit this run's {run}: it holds recipe record's CompactGapNet; "
        f"use model=record {settings}"
    )
    assert list(tmp_path.iterdir()) == [], "a failed start leaves no run dir"


def test_checkpoint_from_before_the_widths_were_stored_names_its_recipe(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["run_config"]["net"]
    ckpt = tmp_path / "old.ckpt"
    torch.save(checkpoint, ckpt)
    error = cli_in_process("src.train", "model=dropout_steplr", *TINY_RUN, f"ckpt_path={ckpt}",
                           f"runs_dir={tmp_path / 'runs'}", data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        f"error: ckpt_path={ckpt} does not fit this run's DropoutGapNet: it holds recipe record's CompactGapNet; "
        "use model=record"
    )
    assert not any((tmp_path / "runs").glob("*")), "a failed start leaves no run dir"


def test_a_hint_names_the_settings_a_checkpoint_predates_at_their_defaults() -> None:
    """A checkpoint from before `separable` existed held a full-conv net: its hint must say so, or following it under
    `tiny` (separable now) builds another net and is refused again."""
    stored = {"stem": [8, 10], "squeeze": 8, "body": [10, 10, 12]}
    assert settings_with_defaults("src.mnist.nets.CompactGapNet", stored) == {**stored, "separable": 0}
    no_body = {"stem": [8, 10], "squeeze": 8}
    assert settings_with_defaults("src.mnist.nets.CompactGapNet", no_body) == no_body, "no such net: as stored"


def test_checkpoints_are_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.ones(3)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"weights": torch.zeros(3), "broken": Unpicklable()}, target)
    assert torch.equal(torch.load(target)["weights"], torch.ones(3)), "the previous checkpoint is intact"
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"], "no partial file is left behind"


# The conversion of checkpoints of the earlier form (`python -m src.core.checkpoint OLD NEW`): these two tests and
# `legacy_checkpoint` go when the converter goes.


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
