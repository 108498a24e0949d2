"""Training augmentation as batched tensor ops on the training device: the torchvision transforms a recipe names,
applied to a whole batch at once with per-sample parameters drawn as torchvision draws them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F
from torchvision import transforms

from src.core.errors import UserError


def uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def gaussian_kernel(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """torchvision's 1-D blur kernel (`_get_gaussian_kernel1d`): `size` taps, normalised to sum 1."""
    half = (size - 1) * 0.5
    pdf = torch.exp(-0.5 * (torch.linspace(-half, half, size, device=device) / sigma) ** 2)
    return pdf / pdf.sum()


def identity_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Pixel centres in grid_sample's [-1, 1] coordinates (align_corners=False), built as torchvision builds them
    for elastic_transform so that the same displacement samples the same places."""
    ys, xs = (torch.linspace((1 - s) / s, (s - 1) / s, s, device=device) for s in (height, width))
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], -1).unsqueeze(0)


class BatchElastic(torch.nn.Module):
    """torchvision's ElasticTransform with one random displacement field per sample, for a whole batch at once.

    As `ElasticTransform.get_params` draws it: uniform noise in [-1, 1] per pixel and axis, blurred by a Gaussian
    of `sigma` px over int(8·sigma + 1) taps (made odd) with reflect padding, times alpha / size, in grid_sample's
    [-1, 1] units (a pixel is 2 / size there, so a pixel moves by alpha / 2 × the blurred noise). Resampled as
    `elastic_transform` resamples: grid_sample with zeros padding and align_corners=False, plus its mask channel
    for the fill (which, bilinear, also darkens the border when the fill is 0). `fill` is a 0-255 pixel value, as
    on the PIL images of data.pipeline=torchvision (which also rounds the result to uint8; this path stays float).
    """

    MODES = (transforms.InterpolationMode.BILINEAR, transforms.InterpolationMode.NEAREST)

    def __init__(self, transform: transforms.ElasticTransform) -> None:
        super().__init__()
        sigma_x, sigma_y = transform.sigma
        if sigma_x != sigma_y or sigma_x <= 0:
            raise UserError(
                f"data.pipeline=tensor cannot batch ElasticTransform sigma={list(transform.sigma)}; it needs one "
                "sigma > 0 for both axes (use data.pipeline=torchvision otherwise)"
            )
        if transform.interpolation not in self.MODES:
            raise UserError(
                f"data.pipeline=tensor cannot batch ElasticTransform interpolation={transform.interpolation.value}; "
                "it supports bilinear and nearest (use data.pipeline=torchvision otherwise)"
            )
        if len(transform.fill) != 1:
            raise UserError(f"ElasticTransform fill={transform.fill} must be one number: MNIST has one channel")
        self.alpha = tuple(transform.alpha)
        self.sigma = sigma_x
        size = int(8 * sigma_x + 1)
        self.kernel_size = size + 1 - size % 2
        self.mode = transform.interpolation.value
        self.fill = transform.fill[0] / 255
        self.blur_matrices: dict[tuple[int, torch.device], torch.Tensor] = {}  # built once per image size and device

    def sample(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(n, H, W, 2) displacements, x then y; all samples' noise blurred by two small matrix products."""
        if self.kernel_size // 2 >= min(height, width):  # torchvision's reflect padding fails there, with a traceback
            raise UserError(
                f"ElasticTransform sigma={self.sigma} blurs over {self.kernel_size} px, too wide for {height}x{width} "
                f"images; use a sigma below {(2 * min(height, width) - 1) / 8}"
            )
        noise = torch.rand(n * 2, height, width, device=device) * 2 - 1  # per sample: x field, then y field
        blurred = self.blur_matrix(height, device) @ noise @ self.blur_matrix(width, device).T
        scale = torch.tensor([self.alpha[0] / width, self.alpha[1] / height], device=device)
        return blurred.view(n, 2, height, width).permute(0, 2, 3, 1) * scale

    def blur_matrix(self, size: int, device: torch.device) -> torch.Tensor:
        """The Gaussian blur along one axis of `size` px, reflect padding included, as a (size, size) matrix: row i
        weighs the pixels that output i sums. Two small matrix products then blur a whole batch of fields, where
        the convolution would run the kernel over padded copies of every field."""
        key = (size, device)
        if key not in self.blur_matrices:
            pad = self.kernel_size // 2
            unit_rows = F.pad(torch.eye(size, device=device).unsqueeze(1), [pad, pad], mode="reflect")
            kernel = gaussian_kernel(self.kernel_size, self.sigma, device)
            # Row j of the convolution is the blur of pixel j: column j of the matrix.
            self.blur_matrices[key] = F.conv1d(unit_rows, kernel.view(1, 1, -1)).squeeze(1).T
        return self.blur_matrices[key]

    def warp(self, images: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
        """Each image resampled at the pixel centres plus its own displacement, filled as torchvision fills."""
        _, _, height, width = images.shape
        grid = identity_grid(height, width, images.device) + displacement
        with_mask = torch.cat([images, torch.ones_like(images[:, :1])], 1)
        sampled = F.grid_sample(with_mask, grid, mode=self.mode, padding_mode="zeros", align_corners=False)
        images, mask = sampled[:, :-1], sampled[:, -1:]
        return images * mask + (1 - mask) * self.fill

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        return self.warp(images, self.sample(n, height, width, images.device))


WARP_DEFAULTS = {"interpolation": transforms.InterpolationMode.NEAREST, "center": None, "expand": False}


def check_default_warp(transform: transforms.RandomRotation | transforms.RandomAffine) -> None:
    """The batched warp resamples as torchvision does by default (nearest, about the centre, black fill, same size):
    a rotation or affine set otherwise is refused, not warped another way."""
    changed = [f"{name}={getattr(transform, name)}" for name, default in WARP_DEFAULTS.items()
               if getattr(transform, name, default) != default]  # fmt: skip
    fill = transform.fill if isinstance(transform.fill, list | tuple) else [transform.fill]
    changed += [f"fill={transform.fill}"] if any(fill) else []
    if changed:
        raise UserError(
            f"data.pipeline=tensor cannot batch {type(transform).__name__} with {', '.join(changed)}; it warps with "
            "the defaults (interpolation nearest, fill 0, center None, expand False); use data.pipeline=torchvision"
        )


class BatchAugment(torch.nn.Module):
    """The torchvision augmentation list applied to a whole batch at once, each sample with its own parameters.

    Rotation and affine (angle, integer-pixel translation, scale, all drawn as torchvision draws them) compose
    into one affine warp per sample, resampled nearest-neighbour with black fill as torchvision does by default;
    brightness and contrast are per-sample intensity transforms applied in a per-sample random order, as
    ColorJitter does; ElasticTransform is `BatchElastic`. The steps run in the list's order, as Compose runs them:
    adjacent rotations and affines make one warp, and each step appears once (an order that would need a step
    twice is refused rather than reordered). Works on any device; expects float images in [0, 1], shape (B, 1, H, W).
    """

    def __init__(self, transforms_: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.angle_ranges: list[tuple[float, float]] = []  # rotation then affine: both rotate about the centre
        self.max_shift = (0.0, 0.0)
        self.scale = (1.0, 1.0)
        self.brightness: tuple[float, float] | None = None
        self.contrast: tuple[float, float] | None = None
        self.elastic: BatchElastic | None = None
        self.affines = 0
        self.steps: list[Callable[[torch.Tensor], torch.Tensor]] = []  # in the order the list applies them
        for transform in transforms_:
            if isinstance(transform, transforms.RandomRotation):
                check_default_warp(transform)
                step = self.random_warp
                self.angle_ranges.append(tuple(transform.degrees))
            elif isinstance(transform, transforms.RandomAffine) and not transform.shear:
                check_default_warp(transform)
                if self.affines:
                    raise UserError(
                        "data.pipeline=tensor cannot batch two RandomAffine steps (each would shift and scale apart; "
                        "one warp holds one shift and scale); merge them into one, or use data.pipeline=torchvision"
                    )
                self.affines += 1
                step = self.random_warp
                self.angle_ranges.append(tuple(transform.degrees))
                self.max_shift = tuple(transform.translate or (0.0, 0.0))
                self.scale = tuple(transform.scale or (1.0, 1.0))
            elif isinstance(transform, transforms.ColorJitter) and not (transform.saturation or transform.hue):
                step = self.jitter
                self.brightness, self.contrast = transform.brightness, transform.contrast
            elif isinstance(transform, transforms.ElasticTransform):
                if self.elastic is None:  # a second ElasticTransform is then the same step twice: refused below
                    self.elastic = BatchElastic(transform)
                step = self.elastic
            else:
                raise UserError(
                    f"data.pipeline=tensor cannot batch {transform!r}; it supports RandomRotation, RandomAffine "
                    "(no shear), ColorJitter (brightness, contrast) and ElasticTransform; use "
                    "data.pipeline=torchvision for others"
                )
            if step == self.random_warp and self.steps[-1:] == [self.random_warp]:
                continue  # adjacent rotations and affines compose into the one warp
            if step in self.steps:
                order = ", ".join(type(t).__name__ for t in transforms_)
                raise UserError(
                    f"data.pipeline=tensor cannot batch the order {order}: rotations and affines must be adjacent "
                    "(they make one warp) and ColorJitter and ElasticTransform appear once each; use "
                    "data.pipeline=torchvision for others"
                )
            self.steps.append(step)

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
        if not (self.brightness or self.contrast):
            return images
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

    def random_warp(self, images: torch.Tensor) -> torch.Tensor:
        if not self.warps:
            return images
        n, _, height, width = images.shape
        return self.warp(images, **self.sample_warp(n, height, width, images.device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            images = step(images)
        return images
