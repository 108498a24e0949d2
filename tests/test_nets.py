import pytest
import torch

from src.mnist.nets import BatchNormGapNet, DropoutGapNet, SequentialAvgPoolNet, count_parameters


@pytest.mark.parametrize(
    ("net", "params"),
    [(BatchNormGapNet(), 9_186), (DropoutGapNet(), 9_320), (SequentialAvgPoolNet(), 12_234)],
)
def test_parameter_counts_match_the_write_ups(net: torch.nn.Module, params: int) -> None:
    assert count_parameters(net) == params


@pytest.mark.parametrize("net", [BatchNormGapNet(), DropoutGapNet(), SequentialAvgPoolNet()])
def test_nets_return_log_probabilities_for_ten_classes(net: torch.nn.Module) -> None:
    net.eval()
    log_probs = net(torch.randn(5, 1, 28, 28))
    assert log_probs.shape == (5, 10)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(5))
