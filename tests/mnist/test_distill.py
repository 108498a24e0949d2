"""Knowledge distillation: the loss, the teacher read from a checkpoint, and the held-out split kept clean."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from src.core.errors import UserError
from src.mnist.distill import Distillation
from src.mnist.nets import UnshuffleGapNet
from src.mnist.record import Split, load_teacher, load_trained
from tests.helpers import TINY_RUN, cli_in_process, recipe_params, train_in_process


def nets_and_batch() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    teacher, student = UnshuffleGapNet([8, 8], [8, 8]).eval(), UnshuffleGapNet([4, 4], [4, 4]).eval()
    return teacher, student, torch.randn(16, 1, 28, 28)


def test_the_loss_mixes_the_labels_and_the_teachers_softened_outputs() -> None:
    teacher, student, images = nets_and_batch()
    log_probs, label_loss = student(images), torch.tensor(1.7)
    distillation = Distillation("unused.ckpt", weight=0.3, temperature=3.0)
    distillation.teacher = teacher
    soft_teacher = F.softmax(teacher(images) / 3, dim=1)
    kl = (soft_teacher * (soft_teacher.log() - F.log_softmax(log_probs / 3, dim=1))).sum(1).mean()
    expected = 0.7 * label_loss + 0.3 * 9 * kl
    torch.testing.assert_close(distillation.loss(images, log_probs, label_loss), expected)
    assert kl > 1e-3, "two different nets must disagree"
    distillation.weight = 0.0
    assert distillation.loss(images, log_probs, label_loss) == label_loss
    distillation.weight, distillation.teacher = 1.0, student
    assert distillation.loss(images, log_probs, label_loss).abs() < 1e-6, "a student that is its teacher learns nothing"


def test_the_teacher_gets_no_gradient_and_the_student_does() -> None:
    teacher, student, images = nets_and_batch()
    distillation = Distillation("unused.ckpt", weight=1.0)
    distillation.teacher = teacher  # load() also freezes it; here the loss alone must keep gradients out of it
    distillation.loss(images, student.train()(images), torch.tensor(0.0)).backward()
    assert all(parameter.grad is None for parameter in teacher.parameters())
    assert all(parameter.grad is not None for parameter in student.parameters())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"weight": 1.5}, "distill.weight=1.5 must be between 0 (labels only) and 1 (teacher only)"),
        ({"temperature": 0.0}, "distill.temperature=0.0 must be > 0"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Distillation("teacher.ckpt", **settings)


def test_a_missing_teacher_is_named_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "teacher.ckpt"
    with pytest.raises(UserError, match=f"distill.checkpoint={missing} is not a file"):
        load_teacher(missing, Split(0, 0))


def test_a_teacher_that_does_not_say_its_split_is_refused(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["run_config"]["data"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.raises(UserError, match=f"distill.checkpoint={old} holds a run record this code cannot read"):
        load_teacher(old, Split(0, 0))


def test_the_teacher_is_needed_before_the_loss_not_for_building_the_student() -> None:
    distillation = Distillation("teacher.ckpt")  # the path is not read: src.eval builds students this way
    with pytest.raises(RuntimeError, match="before use_teacher"):
        distillation.to(torch.device("cpu"), torch.float32)


def test_a_distilled_student_trains_and_is_evaluated_without_its_teacher(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared run's checkpoint teaches `tiny`: the teacher's term changes what the student learns (against the
    same run with distill.weight=0), and the student's checkpoint is evaluated with the teacher's file gone."""
    teacher = tmp_path / "teacher.ckpt"
    shutil.copy(trained_run / "checkpoints" / "last.ckpt", teacher)
    overrides = ("model=tiny", *TINY_RUN, "distill=teacher", f"distill.checkpoint={teacher}", "logger=none")
    summary = train_in_process(*overrides, run_dir=tmp_path / "student", data_dir=tiny_mnist)
    labels_only = train_in_process(*overrides, "distill.weight=0", run_dir=tmp_path / "labels", data_dir=tiny_mnist)
    assert summary["epochs"] == 2
    assert summary["per_epoch"][0]["train_loss"] != pytest.approx(labels_only["per_epoch"][0]["train_loss"], rel=1e-3)
    teacher.unlink()
    ckpt = tmp_path / "student" / "checkpoints" / "last.ckpt"
    student, record, _ = load_trained(ckpt)
    assert student.num_params == recipe_params("tiny")
    assert record.model["distillation"]["checkpoint"] == str(teacher)
    error = cli_in_process("src.eval", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", data_dir=tiny_mnist,
                           monkeypatch=monkeypatch)  # fmt: skip
    assert error is None
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["test_acc"] == summary["test_acc"]


def test_a_teacher_that_learned_from_the_held_out_images_is_refused(
    trained_run: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    """The shared run trained on all training images: a student holding 64 of them out cannot use it."""
    teacher = trained_run / "checkpoints" / "last.ckpt"
    overrides = ("model=tiny", *TINY_RUN, "data.val_split=64", "distill=teacher", f"distill.checkpoint={teacher}")
    with pytest.raises(
        UserError, match=r"trained with data.val_split=0 \(split_seed 0\), so it has learned from images"
    ):
        train_in_process(*overrides, "logger=none", run_dir=tmp_path / "student", data_dir=tiny_mnist)
