"""Held-out accuracy of one run's weights with test-time views beyond the 1-px shifts, then with BatchNorm recomputed.

Evaluation only, no retraining. Each image's probabilities are averaged over the image, the recipe's own shifts and
extra views: copies rotated by ±DEGREES, or scaled by each of SCALES (`F.affine_grid` + `F.grid_sample`, bilinear,
the background filled in). Last, the BatchNorm statistics of the (EMA) weights are recomputed over the plain
training images (cumulative averages, as SWA's `update_bn` does) and the recipe's shifts evaluated again.

    python scripts/heldout_test_time_views.py RUN/checkpoints/last.ckpt     (a run trained with data.val_split=10000)
    python scripts/heldout_test_time_views.py --degrees 10 RUN/checkpoints/last.ckpt

On `tiny`'s seed-1 batch-32 checkpoint it printed 99.18, 99.17, 99.21 and 99.15 %
(results/screens/heldout-screens.md).
"""

from __future__ import annotations

import math

import torch
from heldout import held_out_data, parser
from torch.nn import functional as F

from src.mnist.classifier import normalised
from src.mnist.images import MNIST_MEAN, MNIST_STD
from src.mnist.record import load_trained

BACKGROUND = -MNIST_MEAN / MNIST_STD  # a blank pixel, normalised


def warp(x: torch.Tensor, degrees: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """Rotated by `degrees` and scaled by `scale` about the centre; bilinear, the background filled in."""
    c, s = math.cos(math.radians(degrees)) / scale, math.sin(math.radians(degrees)) / scale
    grid = F.affine_grid(torch.tensor([[c, -s, 0.0], [s, c, 0.0]]).expand(len(x), 2, 3), x.shape, align_corners=False)
    return F.grid_sample(x - BACKGROUND, grid, align_corners=False) + BACKGROUND


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Prints one line per evaluation; returns {evaluation: held-out accuracy %}."""
    command = parser(__doc__.splitlines()[0], several=False)
    command.add_argument("--degrees", type=float, default=5.0, help="the rotated views: ±DEGREES (default 5)")
    command.add_argument("--scales", type=float, nargs=2, default=[0.92, 1.08], help="the scaled views")
    args = command.parse_args(argv)
    model = load_trained(args.ckpts[0]).model
    datamodule = held_out_data(args)

    def accuracy(views) -> float:  # probabilities averaged over the image, the recipe's shifts and `views`
        model.eval()
        correct = 0
        with torch.inference_mode():
            for images, labels in map(lambda b: datamodule.on_after_batch_transfer(b, 0), datamodule.val_dataloader()):
                probs = model(images).exp() * (1 + len(model.test_time_shifts))
                probs = probs + sum(model.net(view(images)).exp() for view in views)
                correct += (probs.argmax(1) == labels).sum().item()
        return 100 * correct / len(datamodule.val_set)

    results = {
        "shifts": accuracy([]),
        f"+ ±{args.degrees:g}°": accuracy([lambda x: warp(x, -args.degrees), lambda x: warp(x, args.degrees)]),
        "+ scales": accuracy([lambda x, scale=scale: warp(x, scale=scale) for scale in args.scales]),
    }
    for bn in (m for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # BatchNorm recomputed
        bn.reset_running_stats()
        bn.momentum = None
    model.net.train()
    torch.manual_seed(0)  # the order of the training images
    with torch.no_grad():
        for images, _ in datamodule._loader(datamodule.train_set, 64, shuffle=True):
            model.net(normalised(images))
    results["shifts, BatchNorm recomputed"] = accuracy([])
    for name, value in results.items():
        print(name, value)
    return results


if __name__ == "__main__":
    main()
