"""`src.eval` and `src.predict` on a checkpoint of a tiny run: the same accuracy, the same digits, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.core.checkpoint import model_from_checkpoint
from src.mnist.data import MNIST_MEAN, MNIST_STD
from src.predict import to_mnist
from tests.conftest import TINY_RUN, TINY_TEST, assert_one_line_error, run_cli, tiny_digits


@pytest.fixture(scope="module")
def trained(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli("model=record", *TINY_RUN, "logger=none", f"hydra.run.dir={run_dir}", data_dir=tiny_mnist)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_eval_reports_the_training_runs_test_accuracy(trained: Path, tiny_mnist: Path, tmp_path: Path) -> None:
    ckpt = trained / "checkpoints" / "last.ckpt"
    result = run_cli(f"ckpt_path={ckpt}", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path}",
                     data_dir=tiny_mnist, module="src.eval")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "summary.json").read_text())
    trained_summary = json.loads((trained / "summary.json").read_text())
    assert (evaluated["recipe"], evaluated["epoch"], evaluated["params"]) == ("record", 2, 7666)
    assert evaluated["test_acc"] == trained_summary["test_acc"]
    assert evaluated["test_loss"] == pytest.approx(trained_summary["test_loss"], rel=1e-5)


def test_eval_of_a_missing_checkpoint_is_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}",
                     data_dir=tiny_mnist, module="src.eval")  # fmt: skip
    assert_one_line_error(result, f"ckpt_path={tmp_path / 'nope.ckpt'} is not a file")
    assert not (tmp_path / "eval").exists()


def write_png(path: Path, grey: np.ndarray) -> None:
    Image.fromarray(grey.astype(np.uint8)).save(path)


def test_predict_reads_a_folder_of_either_polarity_like_the_model_reads_the_test_set(
    trained: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    ckpt = trained / "checkpoints" / "last.ckpt"
    images, _ = tiny_digits(TINY_TEST, seed=1)
    for index in range(6):
        write_png(tmp_path / f"{index}_white_on_black.png", images[index])
        write_png(tmp_path / f"{index}_black_on_white.png", 255 - images[index])
    (tmp_path / "notes.txt").write_text("not an image")
    model, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        batch = (torch.from_numpy(images[:6]).float()[:, None] / 255 - MNIST_MEAN) / MNIST_STD
        expected = model(batch).argmax(dim=1).tolist()

    result = run_cli(f"ckpt_path={ckpt}", f"image={tmp_path}", data_dir=tiny_mnist, module="src.predict")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in result.stdout.splitlines()[2:]}
    for index, digit in enumerate(expected):
        for polarity in ("white_on_black", "black_on_white"):
            assert rows[f"{index}_{polarity}.png"][0] == str(digit)
    assert rows["notes.txt"] == ["-", "is not an image PIL can read (png, jpg, bmp, ...) |"]

    single = run_cli(f"ckpt_path={ckpt}", f"image={tmp_path / '0_black_on_white.png'}", data_dir=tiny_mnist,
                     module="src.predict")  # fmt: skip
    assert single.stdout.startswith(f"{tmp_path / '0_black_on_white.png'}: {expected[0]} (probability 0.")
    assert not list(Path.cwd().glob("outputs/predict*")), "predict writes nothing"


def test_predict_of_a_non_image_is_one_line(trained: Path, tiny_mnist: Path, tmp_path: Path) -> None:
    not_an_image = tmp_path / "digit.png"
    not_an_image.write_text("hello")
    result = run_cli(f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"image={not_an_image}",
                     data_dir=tiny_mnist, module="src.predict")  # fmt: skip
    assert_one_line_error(result, f"image={not_an_image} is not an image PIL can read")


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
