"""The fast path's policies: bf16 only where it is native (and one line where it is asked for but emulated), compile
modes checked before training, and a compiled net whose checkpoint keys do not change."""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.utilities.model_summary import ModelSummary
from torch.nn import functional as F
from torch.utils.data import DataLoader

from src.core import hardware
from src.core.errors import user_error_in
from src.core.logs import quiet_known_noise
from src.mnist.nets import DropoutGapNet
from tests.conftest import compose_train


@pytest.mark.parametrize("native", [True, False])
def test_default_precision_is_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    assert hardware.native_precision("cpu") == ("bf16-mixed" if native else "32-true")


@pytest.mark.parametrize(("major", "native"), [(7, False), (8, True), (9, True)])
def test_a_gpu_gets_bf16_only_from_ampere_on(monkeypatch, major: int, native: bool) -> None:
    """A V100 (7.0) or T4 (7.5) can hold bf16 tensors, which torch's default check counts as support; it emulates
    them, so it gets fp32 and its summaries say bf16_native false."""
    monkeypatch.setattr(hardware.torch.version, "hip", None)
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(hardware.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(hardware.torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    monkeypatch.setattr(hardware.torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # it can hold them
    assert hardware.gpu_has_native_bf16() is native
    assert hardware.native_precision("gpu") == ("bf16-mixed" if native else "32-true")


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(False, False), (True, False), (False, True)])
def test_native_bf16_means_the_instructions_not_onednns_emulation(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    """oneDNN says bf16 is supported on any AVX-512 CPU, where it is emulated: the CPU's flags decide."""
    monkeypatch.setattr(hardware.torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(hardware.torch.cpu, "_is_amx_tile_supported", lambda: amx)
    hardware.cpu_has_native_bf16.cache_clear()
    try:
        assert hardware.cpu_has_native_bf16() == (avx512_bf16 or amx)
    finally:
        hardware.cpu_has_native_bf16.cache_clear()


def test_bf16_asked_of_a_cpu_that_emulates_it_gets_one_line_with_the_slowdown(monkeypatch) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    message = hardware.emulated_bf16_warning("bf16-mixed", "cpu")
    assert message is not None and "\n" not in message
    assert "no native bf16" in message and "1.7-4.4x slower" in message and "trainer.precision=32-true" in message
    assert hardware.emulated_bf16_warning("32-true", "cpu") is None
    assert hardware.emulated_bf16_warning("bf16-mixed", "cuda") is None
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert hardware.emulated_bf16_warning("bf16-mixed", "cpu") is None


def test_unknown_compile_mode_is_refused_before_training() -> None:
    with pytest.raises(Exception) as refused:  # Hydra wraps what a constructor raises; the CLI unwraps it
        instantiate(compose_train("model.compile_mode=fastest").model)
    cause = str(user_error_in(refused.value))
    assert cause.startswith("model.compile_mode='fastest' is not one of None, default, reduce-overhead")


def test_compiled_net_keeps_its_weight_names() -> None:
    """torch.compile is lazy: setup marks the net for compiling (no compile time spent here), and the checkpoint
    keys stay those of the plain net, so a compiled run's checkpoint loads into an uncompiled eval and back."""
    model = instantiate(compose_train("model.compile_mode=default").model)
    names = set(model.state_dict())
    model.setup("fit")
    assert model.net._compiled_call_impl is not None
    assert set(model.state_dict()) == names == {f"net.{name}" for name in DropoutGapNet().state_dict()}
    model.setup("test")  # evaluation alone never compiles
    plain = instantiate(compose_train().model)
    plain.setup("test")
    assert plain.net._compiled_call_impl is None


def test_torch_compile_note_about_cuda_on_a_cpu_machine_is_filtered(caplog) -> None:
    """torch.compile logs it on every CPU-only machine; the other warnings of the same logger still show."""
    quiet_known_noise()
    logger = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING):
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
        logger.warning("something else about extensions")
    assert [record.getMessage() for record in caplog.records] == ["something else about extensions"]


def summary_warnings(model: pl.LightningModule, quiet: bool) -> list[str]:
    """The warnings Lightning's model summary of `model` raises, with or without the project's filters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # so an earlier test's warning is not held back as already shown
        if quiet:
            quiet_known_noise()  # inside catch_warnings: its warnings filters are undone on the way out
        ModelSummary(model)
    return [str(warning.message) for warning in caught]


def test_model_summarys_note_on_mixed_precision_is_filtered() -> None:
    """Every default run on a CPU with native bf16 (and on a GPU) printed Lightning's note that its model summary
    counts a bf16-mixed model's bytes at 32 bits, which is what mixed precision stores the weights in."""
    model = instantiate(compose_train().model)
    model.trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False)
    note = "bf16-mixed is not supported by the model summary"
    assert any(note in message for message in summary_warnings(model, quiet=False))  # Lightning's behaviour
    assert not any(note in message for message in summary_warnings(model, quiet=True))


def test_channels_last_changes_the_layout_not_the_outputs_or_the_checkpoint() -> None:
    """`model.channels_last` stores the conv weights channels-last, so the convs run in that layout; the net's
    outputs and its weight names stay those of the plain layout, and the weights load across the two."""
    torch.manual_seed(0)
    fast = instantiate(compose_train("model=speedrun", "model.channels_last=true").model).eval()
    plain = instantiate(compose_train("model=speedrun", "model.channels_last=false").model).eval()
    plain.load_state_dict(fast.state_dict())
    convs = [module for module in fast.net.modules() if isinstance(module, torch.nn.Conv2d)]
    assert convs and all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    assert not plain.net.features[1].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert fast.net.features[:2](images).is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fast(images), plain(images), rtol=1e-4, atol=1e-5)
    fast.load_state_dict(plain.state_dict())  # and back: the layout stays the model's own
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)


@pytest.mark.parametrize(("log_every_n_steps", "max_steps"), [(2, -1), (50, -1), (2, 3)])
def test_training_metrics_are_the_exact_mean_over_the_epochs_samples(log_every_n_steps: int, max_steps: int) -> None:
    """Training loss and accuracy are summed on the device and handed to Lightning only every `log_every_n_steps`
    steps, at the epoch's last batch and on the run's last step; the logged values are still the plain mean over
    every sample the epoch trained on (batches of unequal size included). lr 0 keeps the weights fixed, so each
    batch's loss can be recomputed afterwards (BatchNorm normalises with the batch's own statistics in training)."""
    torch.manual_seed(0)
    model = instantiate(compose_train("model=tiny", "scheduler=none", "optimizer.lr=0").model)
    batches = [(torch.randn(size, 1, 28, 28), torch.randint(0, 10, (size,))) for size in (8, 8, 8, 8, 3)]
    trainer = pl.Trainer(
        max_epochs=1, max_steps=max_steps, log_every_n_steps=log_every_n_steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    trained = batches[: trainer.global_step]
    with torch.no_grad():
        outputs = [(model.net.train()(images), targets) for images, targets in trained]
    samples = sum(len(targets) for _, targets in trained)
    loss = sum(F.nll_loss(log_probs, targets, reduction="sum") for log_probs, targets in outputs) / samples
    correct = sum((log_probs.argmax(1) == targets).sum() for log_probs, targets in outputs)
    torch.testing.assert_close(trainer.callback_metrics["train/loss"], loss)
    torch.testing.assert_close(trainer.callback_metrics["train/acc"], correct / samples)
