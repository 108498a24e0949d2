"""The published MNIST nets, written from the layer tables in ../shared/seeds/ARCHITECTURES.md.

Every net takes a normalised 1×28×28 batch and returns log-probabilities (the write-ups train with NLL on
log_softmax), so the recipes compare like with like.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_relu_bn(in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 0) -> nn.Sequential:
    """conv → ReLU → BatchNorm, the block both write-ups repeat (they normalise after the activation)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding),
        nn.ReLU(),
        nn.BatchNorm2d(out_channels),
    )


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
    the Linear head. Widths are config, so a recipe's parameter budget is a list in its yaml.
    """

    def __init__(self, stem: list[int], squeeze: int, body: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        if not stem or not body:
            raise ValueError(f"stem and body need at least one conv each, got stem={stem} body={body}")
        layers: list[nn.Module] = []
        channels = 1
        for width in stem:
            layers += [*conv_relu_bn(channels, width), nn.Dropout2d(dropout)]
            channels = width
        layers += [nn.MaxPool2d(2), nn.Conv2d(channels, squeeze, 1)]
        channels = squeeze
        for width in body:
            layers += [*conv_relu_bn(channels, width), nn.Dropout2d(dropout)]
            channels = width
        layers += [nn.Conv2d(channels, 10, 1), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.features(x).flatten(1), dim=1)


class UnshuffleGapNet(nn.Module):
    """The `speedrun` net: a pixel-unshuffle input (1×28×28 → 4×14×14: each 2×2 block of pixels becomes 4 channels)
    so that no conv, ReLU or BatchNorm runs at 28×28, where CompactGapNet spends two thirds of its compute.

    `stem` 3×3 convs run at 14×14 (the first `padded` of them padded, the rest unpadded), a max-pool halves the map,
    the unpadded `body` 3×3 convs run on the small map, then GAP and a Linear head. Blocks are conv → ReLU → BN.
    """

    def __init__(self, stem: list[int], body: list[int], padded: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if not stem or not body:
            raise ValueError(f"stem and body need at least one conv each, got stem={stem} body={body}")
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.features(x)), dim=1)
