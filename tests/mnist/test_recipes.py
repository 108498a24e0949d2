"""Every recipe composes, builds a net under budget with the parameter count README.md gives it, and keeps each
piece overridable.

README.md's recipe table is the one place a recipe's parameter count is written down (tests/helpers.py reads it); the
tests here and elsewhere compare with it, and hold only the rules (the budgets, the epoch limits)."""

import re

import pytest
import torch
from hydra.utils import instantiate

from src.core.errors import user_error_in
from src.mnist.module import MNISTClassifier
from tests.helpers import REPO, compose_train, readme_recipe_params, recipe_params

RECIPES = {
    # recipe: (batch size, epochs, augmentation, scheduler), as the write-ups published them
    "baseline": (128, 20, "none", "none"),
    "augmented": (64, 20, "seed_affine", "none"),
    "dropout_steplr": (64, 19, "seed_affine", "steplr"),
    "sequential_avgpool": (64, 19, "none", "none"),
}


OWN_RECIPES = {
    # recipe: (the parameter budget, its epoch limit)
    "record": (8_000, 15),
    "tiny": (4_000, 15),
    "fast": (20_000, 15),
}


def test_every_recipe_config_is_listed_here() -> None:
    recipes = {path.stem for path in (REPO / "conf" / "model").glob("*.yaml")}
    assert recipes == set(RECIPES) | set(OWN_RECIPES) | {"speedrun", "teacher"}


def test_every_recipe_has_the_parameter_count_the_readme_gives_it() -> None:
    """README.md's recipe table has one row per conf/model recipe, and each row's count is the composed net's."""
    recipes = sorted(path.stem for path in (REPO / "conf" / "model").glob("*.yaml"))
    assert sorted(readme_recipe_params()) == recipes, "one row per recipe in README.md's recipe table"
    counts = {recipe: instantiate(compose_train(f"model={recipe}").model).num_params for recipe in recipes}
    assert counts == {recipe: recipe_params(recipe) for recipe in recipes}


def test_speedrun_stays_under_budget_and_looks_at_the_test_set_once() -> None:
    """No per-epoch evaluation (that would look at the test set during training), the test after the last epoch."""
    cfg = compose_train("model=speedrun")
    model = instantiate(cfg.model)
    assert model.num_params < 20_000
    assert type(model.net).__name__ == "UnshuffleGapNet"
    assert cfg.trainer.limit_val_batches == 0 and cfg.trainer.num_sanity_val_steps == 0 and cfg.test
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert model.test_time_shifts == [(1, 0), (-1, 0), (0, 1), (0, -1)]


@pytest.mark.parametrize("recipe", sorted(OWN_RECIPES))
def test_own_recipes_stay_inside_their_budgets(recipe: str) -> None:
    budget, max_epochs = OWN_RECIPES[recipe]
    cfg = compose_train(f"model={recipe}")
    model = instantiate(cfg.model)
    assert model.num_params < budget
    assert cfg.recipe == recipe and cfg.trainer.max_epochs <= max_epochs
    assert instantiate(cfg.callbacks.ema).__class__.__name__ == "WarmupEMA"


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_composes_to_its_published_settings(recipe: str) -> None:
    batch_size, epochs, augmentation, scheduler = RECIPES[recipe]
    cfg = compose_train(f"model={recipe}")
    model = instantiate(cfg.model)
    assert isinstance(model, MNISTClassifier)
    assert model.num_params < 20_000
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
    params = recipe_params("sequential_avgpool")
    cfg = compose_train("model=sequential_avgpool", f"model.max_params={params}")
    with pytest.raises(Exception) as raised:  # noqa: B017 - hydra wraps it; the UserError is the cause
        instantiate(cfg.model)
    assert re.search(rf"{params:,} parameters.*max_params={params:,}", str(user_error_in(raised.value)))


def test_the_teacher_recipe_has_no_student_budget() -> None:
    model = instantiate(compose_train("model=teacher").model)
    assert model.num_params > 20_000
