"""The command line checked before Hydra composes (src.core.cli): a group option that does not exist, or whose
plugin is not installed, is one line naming the valid options or the package; an error's reason in such a line is
its first line of text (src.core.errors.reason_of)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from src.core.cli import check_group_choices
from src.core.errors import reason_of


@pytest.mark.parametrize(
    ("missing", "args", "package"),
    [
        ("joblib", ["-m", "hydra/launcher=joblib", "seed=1,2"], "hydra-joblib-launcher"),
        ("optuna", ["hparams_search=optuna", "model=tiny"], "optuna"),
        ("optuna", ["hparams_search=layout", "model=tiny"], "optuna"),
    ],
)
def test_missing_plugin_is_one_line(
    missing: str, args: list[str], package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if missing in name else real_find_spec(name, *rest))  # fmt: skip
    option = next(arg for arg in args if "=" in arg and not arg.startswith("seed"))
    with pytest.raises(SystemExit, match=rf"^error: {re.escape(option)} needs the {package} plugin.*make install"):
        check_group_choices(args)
    check_group_choices(["hydra/launcher=basic"])


@pytest.mark.parametrize(
    ("arg", "valid"),
    [
        (
            "model=recrod",
            "augmented, baseline, dropout_steplr, fast, record, sequential_avgpool, speedrun, teacher, tiny",
        ),
        ("hydra/sweeper/pruner=medain", "hyperband, median, percentile, successive_halving"),
        ("hydra/sweeper/sampler=tpe,grid", "qmc, random, tpe"),
    ],
)
def test_an_option_that_does_not_exist_is_one_line_naming_the_valid_ones(arg: str, valid: str) -> None:
    bad = arg.split("=")[1].split(",")[-1]
    with pytest.raises(SystemExit, match=rf"^error: {re.escape(arg.split('=')[0])}={bad} is not an option; valid: "
                       rf"{re.escape(valid)}$"):  # fmt: skip
        check_group_choices([arg])


def test_options_hydra_and_its_plugins_provide_are_valid() -> None:
    check_group_choices(
        ["hydra/launcher=basic", "hydra/sweeper=basic", "hydra/sweeper=optuna", "hydra/launcher=joblib"]
    )


def test_an_errors_reason_is_its_first_line_or_its_type() -> None:
    assert reason_of(ValueError("  bad value\nmore detail\n")) == "bad value"
    assert reason_of(OSError()) == "OSError"
