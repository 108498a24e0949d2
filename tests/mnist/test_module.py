"""The LightningModule (src.mnist.module): test-time shifts (evaluation averages the net's probabilities over each
image and its shifted copies), training metrics that are exact means, compiling and channels-last that leave the
checkpoint's keys alone, and the best accuracy carried across a resume."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.nn import functional as F
from torch.utils.data import DataLoader

from src.core.errors import user_error_in
from src.mnist.nets import DropoutGapNet
from tests.helpers import compose_train

SHIFTS = "[[1,0],[-1,0],[0,1],[0,-1]]"  # the speedrun recipe's


def speedrun_model(*overrides: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return instantiate(compose_train("model=speedrun", *overrides).model)


def test_evaluation_averages_the_probabilities_over_the_shifted_copies() -> None:
    model = speedrun_model(f"model.test_time_shifts={SHIFTS}").eval()
    images = torch.randn(6, 1, 28, 28)
    copies = [images] + [torch.roll(images, (dy, dx), (2, 3)) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    expected = torch.stack([model.net(copy).exp() for copy in copies]).mean(0)
    with torch.no_grad():
        torch.testing.assert_close(model(images).exp(), expected)
        assert not torch.allclose(model(images), model.net(images)), "the copies must change the output"


def test_a_shift_of_dx_moves_the_digit_right_and_dy_down() -> None:
    """One shift, checked against an image moved by hand: the axes and signs that the four symmetric shifts of the
    test above could swap unnoticed ([dx, dy] = [1, 0] moves every column one to the right)."""
    model = speedrun_model("model.test_time_shifts=[[1,0]]").eval()
    images = torch.randn(2, 1, 28, 28)
    moved = torch.zeros_like(images)
    moved[..., 1:] = images[..., :-1]  # one column to the right
    moved[..., 0] = images[..., -1]  # what the roll wraps round: MNIST's empty margin
    with torch.no_grad():
        expected = (model.net(images).exp() + model.net(moved).exp()) / 2
        torch.testing.assert_close(model(images).exp(), expected)
    down = speedrun_model("model.test_time_shifts=[[0,2]]").eval()
    moved = torch.cat([images[..., -2:, :], images[..., :-2, :]], dim=2)  # two rows down
    with torch.no_grad():
        torch.testing.assert_close(down(images).exp(), (down.net(images).exp() + down.net(moved).exp()) / 2)


def test_training_sees_the_images_as_they_are() -> None:
    model = speedrun_model(f"model.test_time_shifts={SHIFTS}").train()
    images = torch.randn(6, 1, 28, 28)
    torch.manual_seed(1)  # BatchNorm in training mode: the same batch gives the same output
    assert torch.equal(model(images), model.net(images))


def test_without_shifts_evaluation_is_the_net() -> None:
    model = speedrun_model("model.test_time_shifts=[]").eval()
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(images), model.net(images))


@pytest.mark.parametrize("shifts", ["[[5,0]]", "[[1]]", "[[0.5,0]]", "[1,0]", "[[true,0]]"])
def test_shifts_that_are_not_small_whole_pixels_are_refused_in_one_line(shifts: str) -> None:
    with pytest.raises(Exception) as refused:  # Hydra wraps what a constructor raises; the CLI unwraps it
        speedrun_model(f"model.test_time_shifts={shifts}")
    message = str(user_error_in(refused.value))
    assert message.startswith("model.test_time_shifts has ") and "each at most 4" in message and "\n" not in message


def test_unknown_compile_mode_is_refused_before_training() -> None:
    with pytest.raises(Exception) as refused:  # Hydra wraps what a constructor raises; the CLI unwraps it
        instantiate(compose_train("model.compile_mode=fastest").model)
    cause = str(user_error_in(refused.value))
    assert cause.startswith("model.compile_mode='fastest' is not one of None, default, reduce-overhead")


def test_compiled_net_keeps_its_weight_names() -> None:
    """torch.compile is lazy: setup marks the net for compiling (no compile time spent here), and the checkpoint
    keys stay those of the plain net, so a compiled run's checkpoint loads into an uncompiled eval and back."""
    model = instantiate(compose_train("model.compile_mode=default").model)
    names = set(model.state_dict())
    model.setup("fit")
    assert model.net._compiled_call_impl is not None
    assert set(model.state_dict()) == names == {f"net.{name}" for name in DropoutGapNet().state_dict()}
    model.setup("test")  # evaluation alone never compiles
    plain = instantiate(compose_train().model)
    plain.setup("test")
    assert plain.net._compiled_call_impl is None


def test_channels_last_changes_the_layout_not_the_outputs_or_the_checkpoint() -> None:
    """`model.channels_last` stores the conv weights channels-last, so the convs run in that layout; the net's
    outputs and its weight names stay those of the plain layout, and the weights load across the two."""
    torch.manual_seed(0)
    fast = instantiate(compose_train("model=speedrun", "model.channels_last=true").model).eval()
    plain = instantiate(compose_train("model=speedrun", "model.channels_last=false").model).eval()
    plain.load_state_dict(fast.state_dict())
    convs = [module for module in fast.net.modules() if isinstance(module, torch.nn.Conv2d)]
    assert convs and all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    assert not plain.net.features[1].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert fast.net.features[:2](images).is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fast(images), plain(images), rtol=1e-4, atol=1e-5)
    fast.load_state_dict(plain.state_dict())  # and back: the layout stays the model's own
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)


@pytest.mark.parametrize(("log_every_n_steps", "max_steps"), [(2, -1), (50, -1), (2, 3)])
def test_training_metrics_are_the_exact_mean_over_the_epochs_samples(log_every_n_steps: int, max_steps: int) -> None:
    """Training loss and accuracy are summed on the device and handed to Lightning only every `log_every_n_steps`
    steps, at the epoch's last batch and on the run's last step; the logged values are still the plain mean over
    every sample the epoch trained on (batches of unequal size included). lr 0 keeps the weights fixed, so each
    batch's loss can be recomputed afterwards (BatchNorm normalises with the batch's own statistics in training)."""
    torch.manual_seed(0)
    model = instantiate(compose_train("model=tiny", "scheduler=none", "optimizer.lr=0").model)
    batches = [(torch.randn(size, 1, 28, 28), torch.randint(0, 10, (size,))) for size in (8, 8, 8, 8, 3)]
    trainer = pl.Trainer(
        max_epochs=1, max_steps=max_steps, log_every_n_steps=log_every_n_steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    trained = batches[: trainer.global_step]
    with torch.no_grad():
        outputs = [(model.net.train()(images), targets) for images, targets in trained]
    samples = sum(len(targets) for _, targets in trained)
    loss = sum(F.nll_loss(log_probs, targets, reduction="sum") for log_probs, targets in outputs) / samples
    correct = sum((log_probs.argmax(1) == targets).sum() for log_probs, targets in outputs)
    torch.testing.assert_close(trainer.callback_metrics["train/loss"], loss)
    torch.testing.assert_close(trainer.callback_metrics["train/acc"], correct / samples)


def test_a_resumed_run_keeps_the_best_validation_accuracy_so_far() -> None:
    """`val/acc_best` is a metric, kept outside the state_dict: the checkpoint carries it, so a resumed run's curve
    goes on from the best epoch before the interruption instead of starting again from its first epoch."""
    before, after = (instantiate(compose_train("model=tiny").model) for _ in range(2))
    before.val_acc_best(torch.tensor(0.981))
    before.val_acc_best(torch.tensor(0.975))
    checkpoint: dict = {}
    before.on_save_checkpoint(checkpoint)
    after.on_load_checkpoint(checkpoint)
    after.on_train_start()
    after.val_acc_best(torch.tensor(0.97))
    assert after.val_acc_best.compute().item() == pytest.approx(0.981)
