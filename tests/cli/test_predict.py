"""`src.predict` on the shared tiny run's checkpoint: the model's digits, nothing written, its one-line error; and
images of any size, position and polarity brought to MNIST's form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.mnist.images import MNIST_MEAN, MNIST_STD, read_image, to_mnist
from src.mnist.record import load_trained
from tests.helpers import REPO, TINY_TEST, assert_one_line_error, cli_in_process, run_cli, tiny_digits


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
    model = load_trained(ckpt).model
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
    expected = to_mnist(read_image(plain, "plain"))
    np.testing.assert_allclose(to_mnist(read_image(drawn, "drawn")), expected, atol=1.5 / 255)


def test_any_size_and_position_is_brought_to_mnist_form() -> None:
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[4:24, 12:16] = 1.0  # a "1": 20 px tall, as MNIST sizes its digits
    digit[4:8, 9:12] = 1.0
    big = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((84, 84), Image.Resampling.NEAREST))
    photo = np.full((200, 150), 255, dtype=np.uint8)  # black on white, off centre, any size
    photo[20:104, 10:94] = 255 - big
    restored = to_mnist(photo.astype(np.float32) / 255)
    ys, xs = np.indices(digit.shape)
    centre_of_mass = (round(14 - (ys * digit).sum() / digit.sum()), round(14 - (xs * digit).sum() / digit.sum()))
    expected = np.roll(digit, centre_of_mass, axis=(0, 1))  # MNIST centres each digit by its centre of mass
    assert restored.shape == (28, 28)
    assert np.corrcoef(restored.ravel(), expected.ravel())[0, 1] > 0.9
