"""Scratch nets of two held-out screens of `record` and `tiny`, kept so that their commands still run; not adopted.

- `BnReluGapNet`: `CompactGapNet` with its blocks in the usual order, conv → BatchNorm → ReLU, instead of the
  write-ups' conv → ReLU → BatchNorm (same parameters).
- `SiluGapNet`: `CompactGapNet` with SiLU (x · sigmoid(x)) in place of every ReLU.

Run (from the repository root, this folder on PYTHONPATH so that Hydra finds the module by name):

    PYTHONPATH=scripts python -m src.train model=tiny seed=1 data.val_split=10000 test=false \
        optimized_metric=val_acc model.net._target_=scratchnets.BnReluGapNet

The figures: results/screens/heldout-screens.md. Their checkpoints name a `_target_` outside `src.mnist.nets`, so
`src.eval` refuses them.
"""

from __future__ import annotations

from torch import nn

from src.mnist.nets import CompactGapNet


class BnReluGapNet(CompactGapNet):
    """Each ReLU swapped with the BatchNorm right after it: conv → BatchNorm → ReLU."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        layers = list(self.features)
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.BatchNorm2d):
                layers[i], layers[i + 1] = layers[i + 1], layers[i]
        self.features = nn.Sequential(*layers)


class SiluGapNet(CompactGapNet):
    """Each `nn.ReLU` child of each module replaced by `nn.SiLU()`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for module in list(self.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(module, name, nn.SiLU())
