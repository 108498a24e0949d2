"""The published MNIST nets, written from the layer tables in ../shared/seeds/ARCHITECTURES.md.

Every net takes a normalised 1×28×28 batch and returns log-probabilities (the write-ups train with NLL on
log_softmax), so the recipes compare like with like.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from src.core.errors import UserError
from src.mnist.images import IMAGE_SIZE


def conv_relu_bn(in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 0) -> nn.Sequential:
    """conv → ReLU → BatchNorm, the block both write-ups repeat (they normalise after the activation)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding),
        nn.ReLU(),
        nn.BatchNorm2d(out_channels),
    )


def separable_relu_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """A depthwise 3×3 conv (one filter per channel) and a 1×1 conv → ReLU → BatchNorm: 9·in + in·out weights
    against a full 3×3 conv's 9·in·out, so a budget buys two to three times the width. No activation between the
    two convs: they are one factored conv."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, groups=in_channels),
        nn.Conv2d(in_channels, out_channels, 1),
        nn.ReLU(),
        nn.BatchNorm2d(out_channels),
    )


def check_separable(separable: object, body_convs: int, body: str) -> None:
    """How many body convs are depthwise-separable: a whole number up to the body's convs (`body` names them)."""
    if isinstance(separable, bool) or not isinstance(separable, int) or not 0 <= separable <= body_convs:
        raise UserError(f"separable={separable} must be a whole number between 0 and {body}")


def settings_repr(settings: dict[str, object]) -> str:
    """`stem=[8, 10], squeeze=8, body=[10, 10, 12]`: a configurable net's `extra_repr`, from its `settings`."""
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def count_parameters(net: nn.Module) -> int:
    """Trainable parameters: the number the < 20k budget is about."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def write_up_001_middle() -> list[nn.Module]:
    """What write-up 001's two nets share after their first conv: padded blocks widening 4 → 20 at 28×28, max-pool,
    a 1×1 squeeze to 4 channels, two unpadded blocks to 12 channels (spliced in place, so weight names are kept)."""
    return [
        conv_relu_bn(4, 8, padding=1),
        conv_relu_bn(8, 12, padding=1),
        conv_relu_bn(12, 16, padding=1),
        conv_relu_bn(16, 20, padding=1),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 4, 1),
        conv_relu_bn(4, 8),
        conv_relu_bn(8, 12),
    ]


class BatchNormGapNet(nn.Module):
    """Write-up 001's first net (`baseline`, `augmented`): 9,186 params, no dropout, GAP + Linear(16→10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_relu_bn(1, 4, padding=1),
            *write_up_001_middle(),
            nn.Conv2d(12, 16, 3),
            nn.AvgPool2d(8),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.features(x).flatten(1)), dim=1)


class DropoutGapNet(nn.Module):
    """Write-up 001's final net (`dropout_steplr`): 9,320 params, one dropout after conv 1, 1×1 conv to 10, GAP."""

    def __init__(self, dropout: float = 0.069) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(dropout),
            *write_up_001_middle(),
            conv_relu_bn(12, 16),
            nn.Conv2d(16, 10, 1),
            nn.AvgPool2d(8),
        )
        self.head = nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.features(x).flatten(1)), dim=1)


class SequentialAvgPoolNet(nn.Module):
    """Write-up 000's net as its code has it (`sequential_avgpool`): 12,234 params, AvgPool transitions, no GAP.

    Its README claims GAP and under 10k parameters; the code has a flatten + Linear(144→10) head instead.
    """

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()

        def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
            return nn.Sequential(*conv_relu_bn(in_channels, out_channels), nn.Dropout2d(dropout))

        def transition(in_channels: int, out_channels: int) -> nn.Sequential:
            return nn.Sequential(*conv_relu_bn(in_channels, out_channels, kernel_size=1), nn.AvgPool2d(2))

        self.block1 = nn.Sequential(conv_block(1, 6), conv_block(6, 12), conv_block(12, 24))
        self.transition1 = transition(24, 12)
        self.block2 = nn.Sequential(conv_block(12, 16), conv_block(16, 32))
        self.transition2 = transition(32, 16)
        self.head = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition2(self.block2(self.transition1(self.block1(x))))
        return F.log_softmax(self.head(x.flatten(1)), dim=1)


class CompactGapNet(nn.Module):
    """This project's own small nets (`record`, `tiny`, `fast`): two unpadded 3×3 stacks around one max-pool, GAP.

    `stem` convs run at full resolution (28 → 28 - 2·len), the max-pool halves it, a 1×1 conv squeezes to
    `squeeze` channels, the `body` convs run on the small map, and a 1×1 conv to 10 classes before GAP replaces
    the Linear head. Widths are config, so a recipe's parameter budget is a list in its yaml. The last `separable`
    body convs are depthwise-separable (`separable_relu_bn`): wider for the same parameters.
    """

    def __init__(
        self, stem: list[int], squeeze: int, body: list[int], dropout: float = 0.0, separable: int = 0
    ) -> None:
        super().__init__()
        if not stem or not body:
            raise UserError(f"stem and body need at least one conv each, got stem={stem} body={body}")
        check_separable(separable, len(body), f"the {len(body)} body convs of body={body}")
        layers: list[nn.Module] = []
        channels = 1
        for width in stem:
            layers += [*conv_relu_bn(channels, width), nn.Dropout2d(dropout)]
            channels = width
        layers += [nn.MaxPool2d(2), nn.Conv2d(channels, squeeze, 1)]
        channels = squeeze
        for index, width in enumerate(body):
            block = separable_relu_bn if index >= len(body) - separable else conv_relu_bn
            layers += [*block(channels, width), nn.Dropout2d(dropout)]
            channels = width
        layers += [nn.Conv2d(channels, 10, 1), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.stem, self.squeeze, self.body, self.separable = list(stem), squeeze, list(body), separable

    @property
    def settings(self) -> dict[str, object]:
        """The `model.net` keys that rebuild this net (a layout search's trial writes into a recipe with them)."""
        return {"stem": self.stem, "squeeze": self.squeeze, "body": self.body, "separable": self.separable}

    def extra_repr(self) -> str:
        """`separable` only where some body conv is, so that the full-conv nets keep their names in logs."""
        widths = {"stem": self.stem, "squeeze": self.squeeze, "body": self.body}
        return settings_repr(widths | ({"separable": self.separable} if self.separable else {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.features(x).flatten(1), dim=1)


def budget_filling_gap_net(
    max_params: int,
    stem_convs: int = 2,
    body_convs: int = 3,
    stem_ratio: float = 0.8,
    squeeze_ratio: float = 0.8,
    growth: float = 1.1,
    separable: int = 0,
    dropout: float = 0.0,
) -> CompactGapNet:
    """A CompactGapNet given by its shape instead of its widths, widened until one more step would reach
    `max_params`: so that a layout search (`hparams_search=layout`) compares where the parameters go, not how many
    there are. Widths are `base · growth^i` along each stack, the stem's scaled by `stem_ratio`, the 1×1 squeeze
    `squeeze_ratio` times the body's first width, the last `separable` body convs depthwise-separable; `base` is the
    largest that fits (bisection: widths only grow with it). The same arguments always give the same net, so a
    checkpoint's config rebuilds it."""
    side = (IMAGE_SIZE - 2 * stem_convs) // 2 - 2 * body_convs
    if stem_convs < 1 or body_convs < 1 or side < 1:
        raise UserError(
            f"stem_convs={stem_convs}, body_convs={body_convs} leave a {side}×{side} map; each needs at least one "
            f"conv and the unpadded convs must leave at least 1×1 ((28 - 2·stem) // 2 - 2·body >= 1)"
        )
    check_separable(separable, body_convs, f"body_convs={body_convs}")
    if min(stem_ratio, squeeze_ratio, growth) <= 0:
        raise UserError(f"stem_ratio={stem_ratio}, squeeze_ratio={squeeze_ratio} and growth={growth} must all be > 0")

    def build(base: float) -> CompactGapNet:
        def widths(scale: float, convs: int) -> list[int]:
            return [max(1, round(base * scale * growth**i)) for i in range(convs)]

        stem, body = widths(stem_ratio, stem_convs), widths(1.0, body_convs)
        return CompactGapNet(stem, max(1, round(squeeze_ratio * body[0])), body, dropout, separable)

    def fits(base: float) -> bool:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            return count_parameters(build(base)) < max_params

    low, high = 0.0, float(max_params)  # base 0: every width 1, the smallest net of this shape
    if not fits(low):
        raise UserError(f"max_params={max_params:,} is too small for even 1-channel convs of this shape")
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return build(low)


class UnshuffleGapNet(nn.Module):
    """The `speedrun` net: a pixel-unshuffle input (1×28×28 → 4×14×14: each 2×2 block of pixels becomes 4 channels)
    so that no conv, ReLU or BatchNorm runs at 28×28, where CompactGapNet spends two thirds of its compute.

    `stem` 3×3 convs run at 14×14 (the first `padded` of them padded, the rest unpadded), a max-pool halves the map,
    the unpadded `body` 3×3 convs run on the small map, then GAP and a Linear head. Blocks are conv → ReLU → BN.
    """

    def __init__(self, stem: list[int], body: list[int], padded: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if not stem or not body:
            raise UserError(f"stem and body need at least one conv each, got stem={stem} body={body}")
        layers: list[nn.Module] = [nn.PixelUnshuffle(2)]
        channels = 4
        for index, width in enumerate(stem):
            layers += [*conv_relu_bn(channels, width, padding=1 if index < padded else 0), nn.Dropout2d(dropout)]
            channels = width
        layers.append(nn.MaxPool2d(2))
        for width in body:
            layers += [*conv_relu_bn(channels, width), nn.Dropout2d(dropout)]
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 10)
        self.stem, self.body, self.padded = list(stem), list(body), padded

    @property
    def settings(self) -> dict[str, object]:
        """The `model.net` keys that rebuild this net (widths, and how many stem convs are padded)."""
        return {"stem": self.stem, "body": self.body, "padded": self.padded}

    def extra_repr(self) -> str:
        return settings_repr(self.settings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.features(x)), dim=1)
