"""Backprop by hand: the 2-2-2 sigmoid network of the spreadsheet exercise, in numpy, with every gradient written
out by the chain rule (no autograd), one row per iteration exactly as the spreadsheet lays it out.

    h1 = w1·i1 + w2·i2    h2 = w3·i1 + w4·i2     a_h = σ(h)
    o1 = w5·a_h1 + w6·a_h2  o2 = w7·a_h1 + w8·a_h2  a_o = σ(o)
    E_total = ½(t1 − a_o1)² + ½(t2 − a_o2)²          w ← w − lr·∂E_total/∂w (all eight from one forward pass)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.core.errors import UserError

WEIGHTS = tuple(f"w{k}" for k in range(1, 9))
ACTIVATIONS = ("h1", "a_h1", "h2", "a_h2", "o1", "a_o1", "o2", "a_o2", "E1", "E2", "E_total")
GRADIENTS = tuple(f"dE_d{w}" for w in WEIGHTS)
COLUMNS = ("iteration", "lr", *WEIGHTS, *ACTIVATIONS, *GRADIENTS)


def sigmoid(x: float) -> float:
    """σ(x) without overflow for any finite x: exp is only taken of −|x|."""
    z = np.exp(-abs(x))
    return 1.0 / (1.0 + z) if x >= 0 else z / (1.0 + z)


def forward_backward(w: Sequence[float], inputs: Sequence[float], targets: Sequence[float]) -> dict[str, float]:
    """One spreadsheet row: the forward values, the two errors and the eight chain-rule gradients."""
    w1, w2, w3, w4, w5, w6, w7, w8 = (np.float64(v) for v in w)
    i1, i2 = inputs
    t1, t2 = targets
    h1 = w1 * i1 + w2 * i2
    h2 = w3 * i1 + w4 * i2
    a_h1, a_h2 = sigmoid(h1), sigmoid(h2)
    o1 = w5 * a_h1 + w6 * a_h2
    o2 = w7 * a_h1 + w8 * a_h2
    a_o1, a_o2 = sigmoid(o1), sigmoid(o2)
    e1 = 0.5 * (t1 - a_o1) ** 2
    e2 = 0.5 * (t2 - a_o2) ** 2
    # ∂E_total/∂o_k = (a_ok − t_k)·a_ok·(1 − a_ok): the output units' error signals.
    delta_o1 = (a_o1 - t1) * a_o1 * (1 - a_o1)
    delta_o2 = (a_o2 - t2) * a_o2 * (1 - a_o2)
    # ∂E_total/∂h_j = (Σ_k delta_ok·w_kj)·a_hj·(1 − a_hj): the error reaching each hidden unit through both outputs.
    delta_h1 = (delta_o1 * w5 + delta_o2 * w7) * a_h1 * (1 - a_h1)
    delta_h2 = (delta_o1 * w6 + delta_o2 * w8) * a_h2 * (1 - a_h2)
    values = (h1, a_h1, h2, a_h2, o1, a_o1, o2, a_o2, e1, e2, e1 + e2)
    gradients = (
        delta_h1 * i1, delta_h1 * i2, delta_h2 * i1, delta_h2 * i2,
        delta_o1 * a_h1, delta_o1 * a_h2, delta_o2 * a_h1, delta_o2 * a_h2,
    )  # fmt: skip
    return {
        **dict(zip(WEIGHTS, map(float, w), strict=True)),
        **dict(zip(ACTIVATIONS, map(float, values), strict=True)),
        **dict(zip(GRADIENTS, map(float, gradients), strict=True)),
    }


def number(name: str, value: object) -> float:
    """`value` as a float, or a one-line error naming the key (Hydra passes `task.lr=abc` through as a string)."""
    if isinstance(value, bool):
        raise UserError(f"{name}={value!r} is not a number")
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(result):
        raise UserError(f"{name}={value!r} must be finite")
    return result


def numbers(name: str, values: object, length: int) -> list[float]:
    if isinstance(values, str) or not hasattr(values, "__len__") or len(values) != length:  # type: ignore[arg-type]
        raise UserError(f"{name}={values!r} must be a list of {length} numbers")
    return [number(f"{name}[{index}]", value) for index, value in enumerate(values)]  # type: ignore[arg-type]


def train(lr: object, iterations: object, inputs: object, targets: object, weights: object) -> list[dict[str, float]]:
    """Plain gradient descent; row k holds the values *before* iteration k's update. Validates its inputs first."""
    lr_value = number("task.lr", lr)
    if lr_value <= 0:
        raise UserError(f"task.lr={lr_value} must be > 0 (the published sweep uses 0.1 to 2.0)")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise UserError(f"task.iterations={iterations!r} must be a whole number >= 1")
    inputs_, targets_ = numbers("task.inputs", inputs, 2), numbers("task.targets", targets, 2)
    w = np.array(numbers("task.weights", weights, 8), dtype=np.float64)
    rows = []
    for iteration in range(iterations):
        with np.errstate(over="ignore", invalid="ignore"):  # checked below, once, with a message that says why
            row = {"iteration": iteration, "lr": lr_value, **forward_backward(w, inputs_, targets_)}
            w = w - lr_value * np.array([row[g] for g in GRADIENTS])
        bad = [column for column in COLUMNS if not math.isfinite(row[column])]
        if bad:
            raise UserError(
                f"{bad[0]} became non-finite at iteration {iteration} with task.lr={lr_value:g}; "
                "use a smaller learning rate or smaller inputs/weights"
            )
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, float]], path: Path) -> None:
    """Full float precision: repr round-trips every float64 exactly."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([repr(row[column]) for column in COLUMNS] for row in rows)


def read_csv(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
