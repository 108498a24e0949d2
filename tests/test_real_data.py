"""On the real MNIST (DATA_DIR): skipped, with the reason shown, when the files are absent."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import MNIST

from tests.conftest import run_cli

# Test accuracy after one epoch swings by seed (measured for dropout_steplr with seed 1 on CPU: 96.83 % with the
# defaults, 96.39 % on the torchvision pipeline in fp32; 91.9-97.7 % over seeds 1-3 on a GPU; 98.0-98.4 % after two
# epochs), so a 97 % bar on one epoch would fail honest runs.
ONE_EPOCH_FLOOR = 95.0


@pytest.mark.real_data
def test_one_epoch_of_dropout_steplr_learns_real_mnist(real_mnist: Path, tmp_path: Path) -> None:
    result = run_cli(
        "model=dropout_steplr", "seed=1", "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={tmp_path}",
        data_dir=real_mnist,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["params"] == 9_320
    assert summary["test_acc"] >= ONE_EPOCH_FLOOR, summary


@pytest.mark.real_data
def test_one_epoch_of_tiny_then_eval_and_predict_agree(real_mnist: Path, tmp_path: Path) -> None:
    """`tiny` for one epoch (its one-cycle schedule squeezed into it), with the recipe's EMA: its warm-up makes the
    average of 469 steps a trained net (a fixed 0.999 decay still leant on the first step's weights)."""
    run_dir = tmp_path / "run"
    result = run_cli("model=tiny", "seed=1", "trainer.max_epochs=1", "logger=none",
                     f"hydra.run.dir={run_dir}", data_dir=real_mnist)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params"] == 3_860
    assert summary["test_acc"] >= ONE_EPOCH_FLOOR, summary

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    evaluated = run_cli(f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", data_dir=real_mnist,
                        module="src.eval")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["test_acc"] == summary["test_acc"]

    # Real test digits as files a user might have: 28×28 as in MNIST, and 4× larger, black on white, off centre.
    images = MNIST(str(real_mnist), train=False).data[:40].numpy()
    folder = tmp_path / "digits"
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:02d}_mnist.png")
        photo = np.full((150, 130), 255, dtype=np.uint8)
        photo[10:122, 5:117] = 255 - np.asarray(Image.fromarray(image).resize((112, 112), Image.Resampling.BILINEAR))
        Image.fromarray(photo).save(folder / f"{index:02d}_photo.png")
    predicted = run_cli(f"ckpt_path={ckpt}", f"image={folder}", data_dir=real_mnist, module="src.predict")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    digits = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in predicted.stdout.splitlines()[2:]}
    labels = MNIST(str(real_mnist), train=False).targets[:40].tolist()
    mnist_right = sum(digits[f"{i:02d}_mnist.png"] == str(label) for i, label in enumerate(labels))
    photo_right = sum(digits[f"{i:02d}_photo.png"] == str(label) for i, label in enumerate(labels))
    assert mnist_right >= 38 and photo_right >= 36, (mnist_right, photo_right)
