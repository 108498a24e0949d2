"""Every recipe composes, builds a net under budget, and keeps each piece overridable."""

import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from src.core.errors import user_error_in
from src.mnist.module import MNISTClassifier
from tests.conftest import REPO, cli_in_process, compose_train

RECIPES = {
    # recipe: (params, batch size, epochs, augmentation, scheduler)
    "baseline": (9_186, 128, 20, "none", "none"),
    "augmented": (9_186, 64, 20, "seed_affine", "none"),
    "dropout_steplr": (9_320, 64, 19, "seed_affine", "steplr"),
    "sequential_avgpool": (12_234, 64, 19, "none", "none"),
}


OWN_RECIPES = {
    # recipe: (params, the parameter budget, its epoch limit)
    "record": (7_878, 8_000, 15),
    "tiny": (3_966, 4_000, 15),
    "fast": (7_666, 20_000, 15),
}


SPEEDRUN_PARAMS = 18_774


def test_every_recipe_config_is_listed_here() -> None:
    recipes = {path.stem for path in (REPO / "conf" / "model").glob("*.yaml")}
    assert recipes == set(RECIPES) | set(OWN_RECIPES) | {"speedrun", "teacher"}


def test_speedrun_stays_under_budget_and_looks_at_the_test_set_once() -> None:
    """No per-epoch evaluation (that would look at the test set during training), the test after the last epoch."""
    cfg = compose_train("model=speedrun")
    model = instantiate(cfg.model)
    assert model.num_params == SPEEDRUN_PARAMS < 20_000
    assert type(model.net).__name__ == "UnshuffleGapNet"
    assert cfg.trainer.limit_val_batches == 0 and cfg.trainer.num_sanity_val_steps == 0 and cfg.test
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert model.test_time_shifts == [(1, 0), (-1, 0), (0, 1), (0, -1)]


@pytest.mark.parametrize("recipe", sorted(OWN_RECIPES))
def test_own_recipes_stay_inside_their_budgets(recipe: str) -> None:
    params, budget, max_epochs = OWN_RECIPES[recipe]
    cfg = compose_train(f"model={recipe}")
    model = instantiate(cfg.model)
    assert model.num_params == params < budget
    assert cfg.recipe == recipe and cfg.trainer.max_epochs <= max_epochs
    assert instantiate(cfg.callbacks.ema).__class__.__name__ == "WarmupEMA"


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_composes_to_its_published_settings(recipe: str) -> None:
    params, batch_size, epochs, augmentation, scheduler = RECIPES[recipe]
    cfg = compose_train(f"model={recipe}")
    model = instantiate(cfg.model)
    assert isinstance(model, MNISTClassifier)
    assert model.num_params == params < 20_000
    assert (cfg.recipe, cfg.data.batch_size, cfg.trainer.max_epochs) == (recipe, batch_size, epochs)
    choices = cfg.hydra.runtime.choices
    assert (choices.augmentation, choices.scheduler, choices.optimizer) == (augmentation, scheduler, "sgd")
    assert (cfg.optimizer.lr, cfg.optimizer.momentum) == (0.01, 0.9)


def test_command_line_overrides_beat_the_recipe() -> None:
    cfg = compose_train(
        "model=dropout_steplr", "scheduler=onecycle", "augmentation=none", "data.batch_size=128",
        "trainer.max_epochs=5", "seed=3",
    )  # fmt: skip
    assert cfg.scheduler.lr_scheduler._target_.endswith("OneCycleLR")
    assert cfg.augmentation.transforms == []
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.seed) == (128, 5, 3)


def test_default_recipe_is_dropout_steplr() -> None:
    assert compose_train().recipe == "dropout_steplr"


def test_net_at_or_over_the_budget_is_refused_with_its_count() -> None:
    cfg = compose_train("model=sequential_avgpool", "model.max_params=12234")
    with pytest.raises(Exception) as raised:  # noqa: B017 - hydra wraps it; the UserError is the cause
        instantiate(cfg.model)
    assert re.search(r"12,234 parameters.*max_params=12,234", str(user_error_in(raised.value)))


def test_cfg_job_prints_the_composed_config(
    tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hydra's flag, through the entry point's own argument handling (in this process: it starts nothing)."""
    assert cli_in_process("src.train", "model=dropout_steplr", "--cfg", "job", data_dir=tiny_mnist,
                          monkeypatch=monkeypatch) is None  # fmt: skip
    printed = capsys.readouterr().out
    assert "recipe: dropout_steplr" in printed
    assert "_target_: src.mnist.nets.DropoutGapNet" in printed
    assert "hydra" not in [line.split(":")[0] for line in printed.splitlines()], "the job's config only"
