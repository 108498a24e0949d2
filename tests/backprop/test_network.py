"""Backprop by hand (src.backprop.network): the hand-written gradients against autograd, the update rule, the
learning-rate ordering, the CSV, and the bad-input errors."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from src.backprop.network import COLUMNS, GRADIENTS, WEIGHTS, forward_backward, read_csv, sigmoid, train, write_csv
from src.core.errors import UserError
from tests.helpers import BACKPROP_DEFAULTS, PUBLISHED_LRS


def autograd_gradients(weights: list[float], inputs: list[float], targets: list[float]) -> np.ndarray:
    w = torch.tensor(weights, dtype=torch.float64, requires_grad=True)
    i = torch.tensor(inputs, dtype=torch.float64)
    t = torch.tensor(targets, dtype=torch.float64)
    hidden = torch.sigmoid(torch.stack([w[0] * i[0] + w[1] * i[1], w[2] * i[0] + w[3] * i[1]]))
    output = torch.sigmoid(torch.stack([w[4] * hidden[0] + w[5] * hidden[1], w[6] * hidden[0] + w[7] * hidden[1]]))
    (0.5 * (t - output) ** 2).sum().backward()
    return w.grad.numpy()


POINTS = [
    (BACKPROP_DEFAULTS["weights"], BACKPROP_DEFAULTS["inputs"], BACKPROP_DEFAULTS["targets"]),
    ([-1.3, 2.1, 0.7, -0.4, 1.9, -2.5, 0.3, 1.1], [0.9, -0.6], [0.1, 0.95]),
    ([3.0, -3.0, 2.0, 1.5, -4.0, 2.5, -1.0, 3.5], [1.5, 2.0], [0.8, 0.2]),
    (list(np.random.default_rng(7).normal(size=8)), [0.3, 0.7], [0.0, 1.0]),
]


@pytest.mark.parametrize(("weights", "inputs", "targets"), POINTS)
def test_hand_written_gradients_equal_autograd(weights: list[float], inputs: list[float], targets: list[float]) -> None:
    row = forward_backward(weights, inputs, targets)
    np.testing.assert_allclose([row[g] for g in GRADIENTS], autograd_gradients(weights, inputs, targets), rtol=1e-10)


def test_default_network_matches_the_spreadsheet_start() -> None:
    row = forward_backward(BACKPROP_DEFAULTS["weights"], BACKPROP_DEFAULTS["inputs"], BACKPROP_DEFAULTS["targets"])
    assert row["h1"] == pytest.approx(0.0275) and row["h2"] == pytest.approx(0.0425)
    assert row["E_total"] == pytest.approx(0.014181377937891659, rel=1e-12)


def test_one_iteration_moves_every_weight_by_minus_lr_times_its_gradient() -> None:
    first, second = train(0.8, 2, **BACKPROP_DEFAULTS)
    for w in WEIGHTS:
        assert second[w] == first[w] - 0.8 * first[f"dE_d{w}"]
        assert second[w] != first[w]


def test_higher_published_learning_rates_converge_faster() -> None:
    final = [train(lr, 100, **BACKPROP_DEFAULTS)[-1]["E_total"] for lr in PUBLISHED_LRS]
    assert final == sorted(final, reverse=True) and len(set(final)) == len(final)


def test_huge_learning_rate_stays_finite_and_quiet() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = train(1e4, 100, **BACKPROP_DEFAULTS)
        assert sigmoid(-1e6) == 0.0 and sigmoid(1e6) == 1.0
    assert all(np.isfinite(row[c]) for row in rows for c in COLUMNS)


def test_overflow_gives_one_clear_error_and_no_warnings() -> None:
    with (
        warnings.catch_warnings(),
        pytest.raises(UserError, match=r"h1 became non-finite at iteration 0 with task.lr=1e\+308"),
    ):
        warnings.simplefilter("error")
        train(1e308, 100, inputs=[1e308, 1e308], targets=BACKPROP_DEFAULTS["targets"], weights=[5.0] * 8)


@pytest.mark.parametrize(
    ("lr", "iterations", "message"),
    [(0, 100, "task.lr=0.0 must be > 0"), (-0.5, 100, "must be > 0"), ("abc", 100, "task.lr='abc' is not a number"),
     (0.5, 0, "task.iterations=0 must be a whole number >= 1"), (0.5, "ten", "task.iterations='ten'")],
)  # fmt: skip
def test_bad_values_are_refused(lr: object, iterations: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        train(lr, iterations, **BACKPROP_DEFAULTS)


def test_csv_keeps_full_precision(tmp_path: Path) -> None:
    rows = train(0.5, 5, **BACKPROP_DEFAULTS)
    write_csv(rows, tmp_path / "iterations.csv")
    assert read_csv(tmp_path / "iterations.csv") == rows
