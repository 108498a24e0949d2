"""Test-time shifts: evaluation averages the net's probabilities over each image and its shifted copies."""

import pytest
import torch
from hydra.utils import instantiate

from src.core.errors import user_error_in
from tests.conftest import compose_train

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
