"""A group option whose plugin is not installed is one line naming the package (src.core.errors)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from src.core.cli import check_group_choices


@pytest.mark.parametrize(
    ("missing", "args", "package"),
    [
        ("joblib", ["-m", "hydra/launcher=joblib", "seed=1,2"], "hydra-joblib-launcher"),
        ("optuna", ["hparams_search=optuna", "model=tiny"], "hydra-optuna-sweeper"),
        ("optuna", ["hparams_search=layout", "model=tiny"], "hydra-optuna-sweeper"),
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
