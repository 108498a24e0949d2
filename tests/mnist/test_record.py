"""What an MNIST checkpoint carries (src.mnist.record): one someone hands you cannot run code, not through pickle,
not through a `_target_` in its config, in eval, predict or resume; one of another net is refused in a line that
names the settings that rebuild it; a record this code cannot read is refused in one line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from src.core.cli import one_line_exit
from src.core.errors import UserError
from src.eval import evaluate
from src.mnist.predictor import CheckpointModel
from src.mnist.record import (
    ALLOWED_TARGETS,
    FORMAT_VERSION,
    RunRecord,
    Split,
    learning_changes,
    learning_settings_as_data,
    load_trained,
    read_checkpoint,
    saved_learning_settings,
    settings_with_defaults,
)
from src.mnist.run import train
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
    CheckpointModel(checkpoint)


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


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda record: record.pop("learning"), "holds a run record this code cannot read (no 'learning')"),
        (lambda record: record["net"].pop("settings"), "holds a run record this code cannot read (no 'settings')"),
        (lambda record: record.update(data=7), "holds a run record this code cannot read (TypeError)"),
        (lambda record: record.update(format_version=2), "holds a run record of format 2, newer than this code reads"),
        (lambda record: record["model"]["net"].update(bogus=1), "holds a record whose net cannot be built (TypeError"),
    ],
)
def test_a_record_this_code_cannot_read_is_refused_in_one_line(
    change: Callable[[dict], object], message: str, trained_run: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    change(checkpoint["run_config"])
    ckpt = tmp_path / "other.ckpt"
    torch.save(checkpoint, ckpt)
    with pytest.raises(UserError, match=re.escape(f"ckpt_path={ckpt} {message}")):
        load_trained(ckpt)


def test_a_checkpoint_without_a_record_is_refused_in_one_line(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["run_config"]
    ckpt = tmp_path / "lightning.ckpt"
    torch.save(checkpoint, ckpt)
    with pytest.raises(UserError, match="has no run record: it was not written by src.train"):
        load_trained(ckpt)


def test_the_record_reads_back_as_written(trained_run: Path) -> None:
    checkpoint, record = read_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    assert record.as_plain_data() == checkpoint["run_config"]
    assert RunRecord.of_checkpoint({"run_config": record.as_plain_data()}, "x") == record
    assert (record.recipe, record.net_class, record.split) == ("record", "CompactGapNet", Split(0, 0))
    assert record.format_version == FORMAT_VERSION


def test_the_allowlist_is_the_projects_own_classes() -> None:
    """Built from the classes, so a renamed or moved class keeps its checkpoints loadable or fails here."""
    assert {"src.mnist.module.MNISTClassifier", "src.mnist.nets.CompactGapNet", "torch.optim.SGD"} <= ALLOWED_TARGETS
    assert all(get_class(target).__name__ == target.rsplit(".", 1)[-1] for target in ALLOWED_TARGETS)
    assert "src.mnist.nets.torch" not in ALLOWED_TARGETS and "src.mnist.nets.count_parameters" not in ALLOWED_TARGETS


def test_a_setting_added_to_the_project_since_a_run_started_counts_as_a_change_only_when_switched_on() -> None:
    """`model.net.separable` came after `learning` did: a run started without it learned with none separable."""
    saved = {"model.net": {"model.net.body": "[14,16,16]"}}
    assert learning_changes(saved, {"model.net": {"model.net.body": "[14,16,16]", "model.net.separable": "0"}}) == []
    switched_on = {"model.net": {"model.net.body": "[14,16,16]", "model.net.separable": "2"}}
    assert learning_changes(saved, switched_on) == ["model.net.separable unset, i.e. off (now 2)"]


def test_a_saved_config_is_read_as_data_and_its_resolver_calls_are_never_made(tmp_path: Path) -> None:
    """A job dir's `.hydra/config.yaml` gives the settings it ran under (a sweep job without a checkpoint), every
    interpolation kept as its text, escaped ones too: a resolver's call (here one that would make a folder) is never
    made, and the live config, read the same way, compares setting by setting; a file that is not a run's config is
    one line."""
    cfg = compose_task("model=speedrun")
    made = tmp_path / "made_by_a_resolver"
    cfg.optimizer.momentum = f"${{optuna_storage:{made}}}"
    cfg.optimizer.weight_decay = f"\\${{optuna_storage:{made}}}"  # OmegaConf's escape, as a tampered file may hold
    saved = tmp_path / "config.yaml"
    OmegaConf.save(cfg, saved)
    settings = saved_learning_settings(saved)
    assert settings["scheduler"]["scheduler.lr_scheduler.max_lr"] == json.dumps("${optimizer.lr}")
    assert settings["optimizer"]["optimizer.momentum"] == json.dumps(f"${{optuna_storage:{made}}}")
    assert settings["optimizer"]["optimizer.weight_decay"] == json.dumps(f"\\${{optuna_storage:{made}}}")
    assert not made.exists()
    now = learning_settings_as_data(OmegaConf.to_container(compose_task("model=speedrun"), resolve=False))
    assert learning_changes(settings, now) == [
        f"optimizer.momentum=${{optuna_storage:{made}}} (now 0.9)",
        f"optimizer.weight_decay=\\${{optuna_storage:{made}}} (now 0.0005)",
    ]
    saved.write_text("- a list\n")
    with pytest.raises(UserError, match=f"^{re.escape(str(saved))} cannot be read as a run's config "):
        saved_learning_settings(saved)


def test_a_hint_names_the_settings_a_checkpoint_predates_at_their_defaults() -> None:
    """A checkpoint from before `separable` existed held a full-conv net: its hint must say so, or following it under
    `tiny` (separable now) builds another net and is refused again."""
    stored = {"stem": [8, 10], "squeeze": 8, "body": [10, 10, 12]}
    assert settings_with_defaults("src.mnist.nets.CompactGapNet", stored) == {**stored, "separable": 0}
    no_body = {"stem": [8, 10], "squeeze": 8}
    assert settings_with_defaults("src.mnist.nets.CompactGapNet", no_body) == no_body, "no such net: as stored"
