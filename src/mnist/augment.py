"""Training augmentation as batched tensor ops on the training device: the torchvision transforms a recipe names,
applied to a whole batch at once with per-sample parameters drawn as torchvision draws them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F
from torchvision import transforms

from src.core.errors import UserError


def uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


class BatchAugment(torch.nn.Module):
    """The torchvision augmentation list applied to a whole batch at once, each sample with its own parameters.

    Rotation and affine (angle, integer-pixel translation, scale, all drawn as torchvision draws them) compose
    into one affine warp per sample, resampled nearest-neighbour with black fill as torchvision does by default;
    brightness and contrast are per-sample intensity transforms applied in a per-sample random order, as
    ColorJitter does. Works on any device; expects float images in [0, 1], shape (B, 1, H, W).
    """

    def __init__(self, transforms_: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.angle_ranges: list[tuple[float, float]] = []  # rotation then affine: both rotate about the centre
        self.max_shift = (0.0, 0.0)
        self.scale = (1.0, 1.0)
        self.brightness: tuple[float, float] | None = None
        self.contrast: tuple[float, float] | None = None
        for transform in transforms_:
            if isinstance(transform, transforms.RandomRotation):
                self.angle_ranges.append(tuple(transform.degrees))
            elif isinstance(transform, transforms.RandomAffine) and not transform.shear:
                self.angle_ranges.append(tuple(transform.degrees))
                self.max_shift = tuple(transform.translate or (0.0, 0.0))
                self.scale = tuple(transform.scale or (1.0, 1.0))
            elif isinstance(transform, transforms.ColorJitter) and not (transform.saturation or transform.hue):
                self.brightness, self.contrast = transform.brightness, transform.contrast
            else:
                raise UserError(
                    f"data.pipeline=tensor cannot batch {transform!r}; it supports RandomRotation, RandomAffine "
                    "(no shear) and ColorJitter (brightness, contrast); use data.pipeline=torchvision for others"
                )

    @property
    def warps(self) -> bool:
        return bool(self.angle_ranges) or any(self.max_shift) or self.scale != (1.0, 1.0)

    def sample_warp(self, n: int, height: int, width: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Per-sample parameters, each drawn from the distribution torchvision draws it from."""
        angle = torch.zeros(n, device=device)
        for low, high in self.angle_ranges:
            angle += uniform(n, low, high, device)
        max_x, max_y = self.max_shift[0] * width, self.max_shift[1] * height
        return {
            "angle": angle,
            "shift_x": torch.round(uniform(n, -max_x, max_x, device)),
            "shift_y": torch.round(uniform(n, -max_y, max_y, device)),
            "scale": uniform(n, *self.scale, device),
        }

    def warp(
        self,
        images: torch.Tensor,
        angle: torch.Tensor,
        shift_x: torch.Tensor,
        shift_y: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """Output pixel p samples the input at R(−angle)·(p − shift)/scale, in the normalised coordinates of
        affine_grid (square pixels: a rotation there is a rotation in pixels)."""
        _, _, height, width = images.shape
        radians = angle * (math.pi / 180)
        cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
        tx, ty = 2 * shift_x / width, 2 * shift_y / height
        theta = torch.stack(
            [torch.stack([cos, sin, -(cos * tx + sin * ty)], 1), torch.stack([-sin, cos, sin * tx - cos * ty], 1)], 1
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def jitter(self, images: torch.Tensor) -> torch.Tensor:
        n, device = len(images), images.device
        per_sample = (n, 1, 1, 1)
        brightness = uniform(n, *self.brightness, device).view(per_sample) if self.brightness else None
        contrast = uniform(n, *self.contrast, device).view(per_sample) if self.contrast else None

        def adjust_brightness(x: torch.Tensor) -> torch.Tensor:
            return x if brightness is None else (x * brightness).clamp(0, 1)

        def adjust_contrast(x: torch.Tensor) -> torch.Tensor:
            if contrast is None:
                return x
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (contrast * x + (1 - contrast) * mean).clamp(0, 1)

        brightness_first = (torch.rand(n, device=device) < 0.5).view(per_sample)
        return torch.where(
            brightness_first, adjust_contrast(adjust_brightness(images)), adjust_brightness(adjust_contrast(images))
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        if self.warps:
            images = self.warp(images, **self.sample_warp(n, height, width, images.device))
        if self.brightness or self.contrast:
            images = self.jitter(images)
        return images
