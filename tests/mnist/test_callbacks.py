from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from src.mnist.callbacks import TensorBoardFigures, warmup_ema_update, warmup_ema_update_all
from src.mnist.nets import CompactGapNet


def averaged_after(avg_fn, updates: int) -> float:
    """A one-weight model that is 0 at the first update and 1 at every later one (a net that moved away from its
    initial weights): the averaged weight after `updates` updates."""
    model = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(model, avg_fn=avg_fn)
    for update in range(updates):
        model.weight.data.fill_(0.0 if update == 0 else 1.0)
        average.update_parameters(model)
    return average.module.weight.item()


def test_warm_up_leaves_the_first_weights_behind_where_a_fixed_decay_keeps_them() -> None:
    warm = averaged_after(partial(warmup_ema_update, 0.999), 469)  # one epoch of `tiny` at batch 128
    fixed = averaged_after(get_ema_avg_fn(0.999), 469)
    assert warm > 0.97
    assert fixed == pytest.approx(1 - 0.999**468, abs=1e-4) and fixed < 0.4


@pytest.mark.parametrize(("updates", "decay"), [(1, 2 / 11), (10, 11 / 20), (8_991, 0.999), (20_000, 0.999)])
def test_decay_grows_as_one_plus_n_over_ten_plus_n_up_to_the_cap(updates: int, decay: float) -> None:
    average, current = torch.tensor([0.0]), torch.tensor([1.0])
    updated = warmup_ema_update(0.999, average, current, torch.tensor(updates))
    assert updated.item() == pytest.approx(1 - decay, rel=1e-4)  # float32


def test_multi_tensor_update_gives_the_per_tensor_numbers_on_a_real_net() -> None:
    """Weights, BatchNorm statistics and its integer batch count, over updates in and past the warm-up."""
    torch.manual_seed(0)
    net = CompactGapNet(stem=[4, 6], squeeze=4, body=[6, 6])
    per_tensor = AveragedModel(net, avg_fn=partial(warmup_ema_update, 0.9), use_buffers=True)
    multi_tensor = AveragedModel(net, multi_avg_fn=partial(warmup_ema_update_all, 0.9), use_buffers=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.nll_loss(net(torch.randn(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
        optimizer.step()
        per_tensor.update_parameters(net)
        multi_tensor.update_parameters(net)
    expected, actual = per_tensor.state_dict(), multi_tensor.state_dict()
    assert 0 < expected["module.features.2.num_batches_tracked"] < 30  # integer buffers are averaged too
    for name, value in expected.items():
        assert value.isfinite().all() and torch.equal(actual[name], value), name


def test_test_figures_count_each_digit_and_keep_the_misclassified_ones(tmp_path: Path) -> None:
    """Two test batches with three wrong predictions: the confusion matrix counts every digit where it landed, the
    misclassified digits are kept (up to the cap) with what was predicted, and both figures reach TensorBoard."""
    figures = TensorBoardFigures(max_misclassified=2)
    trainer = SimpleNamespace(loggers=[TensorBoardLogger(tmp_path, name="", version="")], global_step=7)
    images = torch.arange(4 * 28 * 28, dtype=torch.float32).reshape(4, 1, 28, 28)
    targets, preds = torch.tensor([3, 5, 7, 7]), torch.tensor([3, 6, 1, 7])
    figures.on_test_epoch_start(trainer, None)
    figures.on_test_batch_end(trainer, None, {"preds": preds}, (images, targets), 0)
    figures.on_test_batch_end(trainer, None, {"preds": torch.tensor([0, 2, 9, 9])}, (images, torch.arange(4)), 1)
    expected = torch.zeros(10, 10, dtype=torch.long)
    for true, pred in [(3, 3), (5, 6), (7, 1), (7, 7), (0, 0), (1, 2), (2, 9), (3, 9)]:
        expected[true, pred] += 1
    assert torch.equal(figures._confusion, expected)
    assert [(pred, true) for _, pred, true in figures._wrong] == [(6, 5), (1, 7)], "the first two, then the cap"
    assert torch.equal(figures._wrong[0][0], images[1, 0])
    figures.on_test_epoch_end(trainer, None)
    trainer.loggers[0].experiment.flush()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    assert set(events.Tags()["images"]) == {"test/confusion_matrix", "test/misclassified"}
    assert events.Images("test/misclassified")[0].step == 7
