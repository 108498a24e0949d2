"""`src.eval` and `src.predict` on the shared tiny run's checkpoint: the same accuracy, the same digits, nothing
written by predict, and each command's one-line error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.core.checkpoint import model_from_checkpoint
from src.mnist.data import MNIST_MEAN, MNIST_STD, MNISTDataModule
from src.predict import read_image, to_mnist
from tests.conftest import REPO, TINY_TEST, assert_one_line_error, cli_in_process, run_cli, tiny_digits

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
    assert (evaluated["recipe"], evaluated["seed"], evaluated["epoch"], evaluated["params"]) == ("record", 1, 2, 7_878)
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
    model, _ = model_from_checkpoint(ckpt)
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
    """Checkpoints from before the split was stored: whether the run held images out is unknown, not "none"."""
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["run_config"]["data"]
    ckpt = tmp_path / "old.ckpt"
    torch.save(checkpoint, ckpt)
    error = cli_in_process("src.eval", f"ckpt_path={ckpt}", "held_out=true", f"hydra.run.dir={tmp_path / 'eval'}",
                           data_dir=tiny_mnist, monkeypatch=monkeypatch)  # fmt: skip
    assert error == (
        f"error: ckpt_path={ckpt.resolve()} does not say which training images its run held out (written before "
        "December 2026); held_out=true needs one that does"
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
    ("module", "given", "unset"),
    [("src.eval", ("hydra.run.dir=RUN",), "ckpt_path"), ("src.predict", ("ckpt_path=a.ckpt",), "image")],
)
def test_a_value_left_unset_is_one_line(
    module: str, given: tuple[str, ...], unset: str, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not OmegaConf's MissingMandatoryValue traceback; nothing is left behind: the eval's new dir is removed, and
    predict writes nothing where it runs."""
    args = [arg.replace("RUN", str(tmp_path / "run")) for arg in given]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    error = cli_in_process(module, *args, data_dir=tiny_mnist, monkeypatch=monkeypatch, cwd=cwd)
    assert error == f"error: {unset} has no value (??? in the config); give one on the command line: {unset}=..."
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cwd"] and not any(cwd.iterdir())


@pytest.mark.slow
def test_eval_of_a_missing_checkpoint_is_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}",
                     data_dir=tiny_mnist, module="src.eval")  # fmt: skip
    assert_one_line_error(result, f"ckpt_path={tmp_path / 'nope.ckpt'} is not a file")
    assert not (tmp_path / "eval").exists()


def write_png(path: Path, grey: np.ndarray) -> None:
    Image.fromarray(grey.astype(np.uint8)).save(path)


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path below `folder` with its size and modification time: what a command could have added or changed."""
    if not folder.exists():
        return {}
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}


def test_predict_reads_a_folder_of_either_polarity_and_writes_nothing(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    images, _ = tiny_digits(TINY_TEST, seed=1)
    folder, cwd = tmp_path / "digits", tmp_path / "cwd"
    folder.mkdir()
    cwd.mkdir()
    for index in range(6):
        write_png(folder / f"{index}_white_on_black.png", images[index])
        write_png(folder / f"{index}_black_on_white.png", 255 - images[index])
    (folder / "notes.txt").write_text("not an image")
    model, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        batch = (torch.from_numpy(images[:6]).float()[:, None] / 255 - MNIST_MEAN) / MNIST_STD
        expected = model(batch).argmax(dim=1).tolist()
    before, repo_outputs, run_files = listing(tmp_path), listing(REPO / "outputs"), listing(trained_run)
    capsys.readouterr()

    assert cli_in_process("src.predict", f"ckpt_path={ckpt}", f"image={folder}", data_dir=None,
                          monkeypatch=monkeypatch, cwd=cwd) is None  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| image | digit | probability |", "|---|---|---|"]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in lines[2:]}
    assert len(rows) == 13
    for index, digit in enumerate(expected):
        for polarity in ("white_on_black", "black_on_white"):
            assert rows[f"{index}_{polarity}.png"][0] == str(digit)
    assert rows["notes.txt"] == ["-", "is not an image PIL can read (png, jpg, bmp, ...) |"]

    single = folder / "0_black_on_white.png"
    assert cli_in_process("src.predict", f"ckpt_path={ckpt}", f"image={single}", data_dir=None,
                          monkeypatch=monkeypatch, cwd=cwd) is None  # fmt: skip
    assert capsys.readouterr().out.startswith(f"{single}: {expected[0]} (probability 0.")

    assert listing(tmp_path) == before, "predict wrote into its working folder or beside the images"
    assert listing(REPO / "outputs") == repo_outputs, "predict wrote into the repo's outputs/"
    assert listing(trained_run) == run_files, "predict wrote beside the checkpoint"


@pytest.mark.slow
def test_predict_of_a_non_image_is_one_line(trained_run: Path, tiny_mnist: Path, tmp_path: Path) -> None:
    not_an_image = tmp_path / "digit.png"
    not_an_image.write_text("hello")
    result = run_cli(f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"image={not_an_image}",
                     data_dir=tiny_mnist, module="src.predict", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result, f"image={not_an_image} is not an image PIL can read")
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
    assert [path.name for path in tmp_path.iterdir()] == ["digit.png"], "nothing written"


@pytest.mark.parametrize("ink", [0, 255])
def test_a_digit_drawn_on_a_transparent_canvas_reads_as_the_same_digit(ink: int, tmp_path: Path) -> None:
    """Its colour is the same everywhere (black or white) and only the opacity draws it: read as drawn on a
    background that contrasts with the ink, it gives the same MNIST image as a plain white-on-black file."""
    images, _ = tiny_digits(4, seed=3)
    plain, drawn = tmp_path / "plain.png", tmp_path / "drawn.png"
    write_png(plain, images[0])
    rgba = np.zeros((*images[0].shape, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = ink, images[0]
    Image.fromarray(rgba).save(drawn)  # RGBA, from the shape
    expected = to_mnist(read_image(plain), plain)
    np.testing.assert_allclose(to_mnist(read_image(drawn), drawn), expected, atol=1.5 / 255)


def test_any_size_and_position_is_brought_to_mnist_form() -> None:
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[4:24, 12:16] = 1.0  # a "1": 20 px tall, as MNIST sizes its digits
    digit[4:8, 9:12] = 1.0
    big = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((84, 84), Image.Resampling.NEAREST))
    photo = np.full((200, 150), 255, dtype=np.uint8)  # black on white, off centre, any size
    photo[20:104, 10:94] = 255 - big
    restored = to_mnist(photo.astype(np.float32) / 255, Path("photo.png"))
    ys, xs = np.indices(digit.shape)
    centre_of_mass = (round(14 - (ys * digit).sum() / digit.sum()), round(14 - (xs * digit).sum() / digit.sum()))
    expected = np.roll(digit, centre_of_mass, axis=(0, 1))  # MNIST centres each digit by its centre of mass
    assert restored.shape == (28, 28)
    assert np.corrcoef(restored.ravel(), expected.ravel())[0, 1] > 0.9
