"""The console shows the user's run: the library notes that are not about it are filtered (src.core.logs)."""

from __future__ import annotations

import logging
import warnings

import pytorch_lightning as pl
from hydra.utils import instantiate
from pytorch_lightning.utilities.model_summary import ModelSummary

from src.core.logs import quiet_known_noise
from tests.helpers import compose_train


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
