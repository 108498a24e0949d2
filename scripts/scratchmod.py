"""The scratch module of a held-out screen of `tiny`: weight decay on conv and linear weights only; not adopted.

`NormNoDecayClassifier` trains as `MNISTClassifier` does, with the recipe's optimiser and schedule, but spares
BatchNorm's scales and shifts and every bias from the weight decay (every parameter of one dimension or none).

Run (from the repository root, this folder on PYTHONPATH so that Hydra finds the module by name):

    PYTHONPATH=scripts python -m src.train model=tiny seed=1 data.val_split=10000 test=false \
        optimized_metric=val_acc trainer.precision=32-true data.unaugmented_last_epochs=2 \
        model._target_=scratchmod.NormNoDecayClassifier

The figures: results/screens/heldout-screens.md.
"""

from __future__ import annotations

from src.mnist.module import MNISTClassifier


class NormNoDecayClassifier(MNISTClassifier):
    def configure_optimizers(self):  # the recipe's optimiser and schedule, over two parameter groups
        decayed = [p for p in self.net.parameters() if p.ndim > 1]
        spared = [p for p in self.net.parameters() if p.ndim <= 1]
        original = self.make_optimizer
        groups = [{"params": decayed}, {"params": spared, "weight_decay": 0.0}]
        self.make_optimizer = lambda params: original(params=groups)
        try:
            return super().configure_optimizers()
        finally:
            self.make_optimizer = original
