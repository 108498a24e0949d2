"""The optimiser step alone, SGD with and without `foreach`, on the `speedrun` net's parameters.

Random gradients, Nesterov momentum 0.9, weight decay 5e-4, as the `speedrun` recipe trains; prints the mean
milliseconds per `optimizer.step()` over N steps for `foreach=False` and `foreach=True`. Alternate rounds: shared
cores drift. The figures: docs/speed.md#no-per-step-host-sync.

    python scripts/time_sgd_step.py
    python scripts/time_sgd_step.py --steps 2000
"""

from __future__ import annotations

import argparse
import time

import torch

from src.mnist.nets import UnshuffleGapNet


def main(argv: list[str] | None = None) -> dict[bool, float]:
    """Prints and returns {foreach: milliseconds per step}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per setting (default 500)")
    args = parser.parse_args(argv)
    net = UnshuffleGapNet([16, 24], [28, 32])
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    milliseconds = {}
    for foreach in (False, True):
        opt = torch.optim.SGD(
            net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=foreach
        )
        start = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        milliseconds[foreach] = (time.perf_counter() - start) / args.steps * 1e3
        print(f"foreach={foreach}: {milliseconds[foreach]:.3f} ms per step")
    return milliseconds


if __name__ == "__main__":
    main()
