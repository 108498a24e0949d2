import pytest
import torch

from src.core.errors import UserError
from src.mnist.nets import (
    BatchNormGapNet,
    CompactGapNet,
    DropoutGapNet,
    SequentialAvgPoolNet,
    budget_filling_gap_net,
    count_parameters,
)
from tests.helpers import recipe_params


@pytest.mark.parametrize(
    ("net", "recipe"),
    [(BatchNormGapNet(), "baseline"), (DropoutGapNet(), "dropout_steplr"),
     (SequentialAvgPoolNet(), "sequential_avgpool")],
)  # fmt: skip
def test_parameter_counts_match_the_write_ups(net: torch.nn.Module, recipe: str) -> None:
    """The write-ups' counts, as README.md's row of the recipe that trains each published net gives them."""
    assert count_parameters(net) == recipe_params(recipe)


@pytest.mark.parametrize("net", [BatchNormGapNet(), DropoutGapNet(), SequentialAvgPoolNet()])
def test_nets_return_log_probabilities_for_ten_classes(net: torch.nn.Module) -> None:
    net.eval()
    log_probs = net(torch.randn(5, 1, 28, 28))
    assert log_probs.shape == (5, 10)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(5))


@pytest.mark.parametrize("budget", [4_000, 8_000])
@pytest.mark.parametrize(
    "shape",
    [{}, {"stem_convs": 1, "body_convs": 4}, {"stem_convs": 3, "body_convs": 4, "growth": 1.4},
     {"stem_ratio": 0.4, "squeeze_ratio": 1.6, "growth": 0.8}, {"body_convs": 4, "separable": 3}],
)  # fmt: skip
def test_a_shape_is_widened_to_fill_its_budget(budget: int, shape: dict[str, float]) -> None:
    net = budget_filling_gap_net(budget, **shape)
    assert 0.9 * budget <= count_parameters(net) < budget
    wider = budget_filling_gap_net(budget + 400, **shape)  # more budget, the same shape: more parameters
    assert count_parameters(wider) > count_parameters(net)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_a_budget_filled_net_is_the_compact_net_of_its_widths_with_the_same_initial_weights() -> None:
    """Sizing it builds nets on the meta device only: the random stream a seed gives is left to the real net."""
    torch.manual_seed(3)
    net = budget_filling_gap_net(4_000, stem_convs=2, body_convs=3)
    torch.manual_seed(3)
    twin = CompactGapNet(net.stem, net.squeeze, net.body)
    for (name, weight), twin_weight in zip(net.state_dict().items(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(weight, twin_weight, rtol=0, atol=0, msg=name)


def test_separable_convs_buy_a_budget_filled_shape_wider_convs() -> None:
    """The layout search can place the budget in depthwise-separable body convs too: same shape, same budget, the
    separable body is wider."""
    full = budget_filling_gap_net(4_000, body_convs=4)
    separable = budget_filling_gap_net(4_000, body_convs=4, separable=3)
    assert separable.separable == 3 and count_parameters(separable) < 4_000
    assert all(wide > narrow for wide, narrow in zip(separable.body[1:], full.body[1:], strict=True))


@pytest.mark.parametrize(
    ("shape", "message"),
    [({"stem_convs": 3, "body_convs": 6}, r"stem_convs=3, body_convs=6 leave a -1×-1 map"),
     ({"stem_convs": 0}, r"stem_convs=0, body_convs=3 leave a 8×8 map; each needs at least one conv"),
     ({"growth": 0.0}, r"growth=0.0 must all be > 0"),
     ({"separable": 4}, r"separable=4 must be a whole number between 0 and body_convs=3"),
     ({"max_params": 50}, r"max_params=50 is too small for even 1-channel convs of this shape")],
)  # fmt: skip
def test_a_shape_that_cannot_be_built_is_one_line(shape: dict[str, float], message: str) -> None:
    with pytest.raises(UserError, match=message):
        budget_filling_gap_net(**{"max_params": 4_000, **shape})


def test_separable_body_convs_are_depthwise_then_pointwise_and_cost_what_they_should() -> None:
    """A separable conv has 9·in + in depthwise and in·out + out pointwise weights and biases, a full one 9·in·out
    + out; the BatchNorm after either is the same."""
    full = CompactGapNet(stem=[8, 10], squeeze=8, body=[16, 22, 26])
    net = CompactGapNet(stem=[8, 10], squeeze=8, body=[16, 22, 26], separable=2)
    saved = sum(9 * cin * cout - 10 * cin - cin * cout for cin, cout in [(16, 22), (22, 26)])
    assert count_parameters(full) - count_parameters(net) == saved
    depthwise = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [(m.in_channels, m.groups) for m in depthwise] == [(16, 16), (22, 22)]
    assert count_parameters(net) == 3_852 and net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert repr(net).startswith("CompactGapNet(\n  stem=[8, 10], squeeze=8, body=[16, 22, 26], separable=2")
    assert full.settings["separable"] == 0 and "separable" not in repr(full)  # full-conv nets keep their names


@pytest.mark.parametrize(("separable", "body"), [(-1, [10]), (3, [10, 12]), (None, [10]), (1.5, [10, 12])])
def test_a_separable_count_the_body_cannot_have_is_one_line(separable: object, body: list[int]) -> None:
    expected = rf"separable={separable} must be a whole number between 0 and the {len(body)} body convs"
    with pytest.raises(UserError, match=expected):
        CompactGapNet(stem=[8], squeeze=8, body=body, separable=separable)
