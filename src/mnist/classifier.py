"""A trained net as inference uses it, on torch alone (no Lightning): the test-time-shift averaging that training's
evaluation, `src.eval`, `src.predict`, the page and the ONNX export all run, written once here."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from src.core.errors import UserError
from src.mnist.images import MNIST_MEAN, MNIST_STD
from src.mnist.nets import count_parameters

# MNIST's digits sit in the middle 20×20 of the 28×28 image: a roll by up to 4 px wraps only the empty margin.
MAX_TEST_TIME_SHIFT = 4


def checked_shifts(shifts: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """`[[dx, dy], ...]` as tuples, or one line naming the first shift that is not a pair of small whole pixels."""
    for shift in shifts:
        pair = isinstance(shift, Sequence) and len(shift) == 2
        whole_pixels = pair and all(isinstance(step, int) and not isinstance(step, bool) for step in shift)
        if not whole_pixels or max(map(abs, shift)) > MAX_TEST_TIME_SHIFT:
            raise UserError(
                f"model.test_time_shifts has {shift}; each shift is [dx, dy] in whole pixels, each at most "
                f"{MAX_TEST_TIME_SHIFT} (MNIST's empty margin), e.g. [[1, 0], [-1, 0], [0, 1], [0, -1]]"
            )
    return [(int(dx), int(dy)) for dx, dy in shifts]


def shift_averaged(net: nn.Module, images: torch.Tensor, shifts: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The log of the mean of `net`'s probabilities over each image and its copies rolled by each [dx, dy] (dx
    right, dy down), all copies in one batch through the net; `net`'s own log-probabilities without shifts."""
    if not shifts:
        return net(images)
    views = [images] + [torch.roll(images, shifts=(dy, dx), dims=(2, 3)) for dx, dy in shifts]
    log_probs = net(torch.cat(views)).unflatten(0, (len(views), -1))  # views × images × classes
    return torch.logsumexp(log_probs, dim=0) - math.log(len(views))


def normalised(images: torch.Tensor) -> torch.Tensor:
    """uint8 digits (N×28×28) as every net takes them: N×1×28×28 floats, scaled to [0, 1] and normalised."""
    return images.unsqueeze(1).float().div(255).sub_(MNIST_MEAN).div_(MNIST_STD)


class TrainedNet(nn.Module):
    """A net and its recipe's test-time shifts: `forward` gives the shift-averaged log-probabilities. Its state_dict
    keys (`net.*`) are those of the training module's, so a checkpoint's weights load into it as they are."""

    def __init__(self, net: nn.Module, test_time_shifts: Sequence[Sequence[int]] = (), channels_last: bool = False):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.test_time_shifts = checked_shifts(test_time_shifts)
        self.num_params = count_parameters(net)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return shift_averaged(self.net, images, self.test_time_shifts)
