"""The values an MNIST run must get right (src.mnist.schema), each named in one line, and what a search suggests."""

from __future__ import annotations

import pytest

from src.core.errors import UserError
from src.mnist.schema import suggest_dropout, validate
from tests.helpers import BAD_VALUES, compose_task, compose_train, needs_sweep_extras


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_schema_names_each_bad_value_and_what_is_valid(override: str, message: str) -> None:
    with pytest.raises(UserError) as raised:
        validate(compose_task(*override.split()))
    assert str(raised.value) == message


@needs_sweep_extras
@pytest.mark.parametrize(("recipe", "searched"), [("tiny", True), ("baseline", False)])
def test_dropout_is_searched_only_where_the_net_has_one(recipe: str, searched: bool) -> None:
    import optuna

    trial = optuna.create_study(direction="maximize").ask()
    suggest_dropout(compose_train(f"model={recipe}", "hparams_search=optuna"), trial)
    assert ("model.net.dropout" in trial.params) is searched
    assert not searched or 0.0 <= trial.params["model.net.dropout"] <= 0.15
