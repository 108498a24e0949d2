"""`src.eval` on the shared tiny run's checkpoint: the training run's accuracy, other test-time shifts, held-out
scoring, and the command's one-line errors (with src.predict's for a value left unset)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from src.mnist.data import MNISTDataModule
from src.mnist.record import load_trained
from tests.helpers import assert_one_line_error, cli_in_process, recipe_params, run_cli

EVAL_KEYS = {"ckpt_path", "recipe", "seed", "params", "epoch", "test_acc", "test_loss", "test_time_shifts"}


def test_eval_reports_the_training_runs_test_accuracy(trained_run: Path, evaluated_run: Path) -> None:
    """Training tested on the torchvision pipeline; eval reads the checkpoint on the tensor pipeline (the default):
    the same EMA weights and the same images give the same figures."""
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    evaluated = json.loads((evaluated_run / "eval.json").read_text())
    assert not (evaluated_run / "summary.json").exists(), "an eval is not a training run: src.aggregate must skip it"
    assert set(evaluated) >= EVAL_KEYS
    trained = json.loads((trained_run / "summary.json").read_text())
    assert evaluated["ckpt_path"] == str(ckpt.resolve())
    params = recipe_params("record")
    assert (evaluated["recipe"], evaluated["seed"], evaluated["epoch"], evaluated["params"]) == ("record", 1, 2, params)
    assert evaluated["test_acc"] == trained["test_acc"] == trained["per_epoch"][-1]["val_acc"]
    assert evaluated["test_loss"] == pytest.approx(trained["test_loss"], rel=1e-5)


def test_eval_with_other_test_time_shifts_evaluates_the_same_weights(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`test_time_shifts=[]` scores the run's weights without the recipe's shifts (`record` has eight): the accuracy
    of the bare net on the test images, and eval.json says which shifts it used."""
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    error = cli_in_process("src.eval", f"ckpt_path={ckpt}", "test_time_shifts=[]", f"hydra.run.dir={tmp_path}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error is None, error
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    model = load_trained(ckpt).model
    assert len(model.test_time_shifts) == 8 and evaluated["test_time_shifts"] == []
    datamodule = MNISTDataModule(root=str(tiny_mnist), eval_batch_size=1000)
    datamodule.setup("test")
    with torch.inference_mode():
        batches = (datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.test_dataloader())
        correct = sum((model.net(images).argmax(1) == labels).sum().item() for images, labels in batches)
    assert evaluated["test_acc"] == pytest.approx(100 * correct / len(datamodule.test_set))


def test_eval_held_out_of_a_run_that_held_nothing_out_is_one_line(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its validation images were the test set: scoring it "held out" would report the test set under another name."""
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    error = cli_in_process("src.eval", f"ckpt_path={ckpt}", "held_out=true", f"hydra.run.dir={tmp_path / 'eval'}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        f"error: held_out=true needs a run trained with data.val_split=N, and ckpt_path={ckpt.resolve()} learned "
        "from every training image; evaluate it on the test set (held_out=false)"
    )
    assert not (tmp_path / "eval").exists()


def test_eval_held_out_of_a_checkpoint_that_does_not_record_its_split_is_one_line(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record without its split: whether the run held images out is unknown, not "none"."""
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["run_config"]["data"]
    ckpt = tmp_path / "old.ckpt"
    torch.save(checkpoint, ckpt)
    error = cli_in_process("src.eval", f"ckpt_path={ckpt}", "held_out=true", f"hydra.run.dir={tmp_path / 'eval'}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        f"error: ckpt_path={ckpt.resolve()} holds a run record this code cannot read (no 'data'): it was written by "
        "an earlier version of this project; train it again with src.train"
    )


def test_eval_into_a_training_runs_dir_is_refused_and_changes_none_of_its_files(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    before = {name: (run / name).read_bytes() for name in (".hydra/config.yaml", "summary.json", "train.log")}
    error = cli_in_process("src.eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == f"error: {run} already holds another run's files; give hydra.run.dir a new folder"
    assert {name: (run / name).read_bytes() for name in before} == before and not (run / "eval.json").exists()
    assert [path.name for path in (run / ".hydra").iterdir() if path.is_dir()] == [], "the eval's config went too"


def test_a_failed_eval_removes_only_a_dir_it_made(tiny_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    """A folder that was there before (here with the user's own log) is left as it was; a new one is removed."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.log").write_text("the user's\n")
    for folder in (mine, tmp_path / "new"):
        error = cli_in_process("src.eval", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={folder}",
                               data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
        assert error == f"error: ckpt_path={tmp_path / 'nope.ckpt'} is not a file"
    assert [path.name for path in mine.iterdir()] == ["notes.log"], "Hydra's config and the eval's log are gone"
    assert (mine / "notes.log").read_text() == "the user's\n" and not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("module", "given", "unset", "message"),
    [
        ("src.eval", ("hydra.run.dir=RUN",), "ckpt_path", "has no value (??? in the config); give one"),
        ("src.predict", ("ckpt_path=a.ckpt",), "image", "has no value; give one"),
    ],
)
def test_a_value_left_unset_is_one_line(
    module: str, given: tuple[str, ...], unset: str, message: str, tiny_mnist: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Not OmegaConf's MissingMandatoryValue traceback; nothing is left behind: the eval's new dir is removed, and
    predict writes nothing where it runs."""
    args = [arg.replace("RUN", str(tmp_path / "run")) for arg in given]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    error = cli_in_process(module, *args, data_dir=tiny_mnist, monkeypatch=monkeypatch, cwd=cwd)
    assert error == f"error: {unset} {message} on the command line: {unset}=..."
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cwd"] and not any(cwd.iterdir())


@pytest.mark.slow
def test_eval_of_a_missing_checkpoint_is_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}",
                     data_dir=tiny_mnist, module="src.eval")  # fmt: skip
    assert_one_line_error(result, f"ckpt_path={tmp_path / 'nope.ckpt'} is not a file")
    assert not (tmp_path / "eval").exists()


def test_eval_command_refuses_a_pickle_payload_in_one_line(
    pickle_payload: tuple[Path, Path], tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m src.eval`, `__main__` block and Hydra included, in this process (the exit-status contract of the
    eval command is tested in a new interpreter by test_eval_of_a_missing_checkpoint_is_one_line)."""
    checkpoint, marker = pickle_payload
    error = cli_in_process("src.eval", f"ckpt_path={checkpoint}", f"hydra.run.dir={checkpoint.parent / 'eval'}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error is not None and error.startswith(f"error: ckpt_path={checkpoint} holds Python objects beyond tensors")
    assert "\n" not in error and not marker.exists()
