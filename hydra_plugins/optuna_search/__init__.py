"""Hydra's entry point for this project's Optuna search (`hydra/sweeper=optuna`, which `hparams_search=...` selects).

Hydra accepts sweepers only from the `hydra_plugins` package and imports every module there at each start, so this
one holds the class alone and leaves Optuna to `src.core.search`, imported when a search starts."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSearch(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.search: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from src.core.search import Search  # noqa: PLC0415 - Optuna's import is paid by searches only

        self.search = Search(hydra_context=hydra_context, task_function=task_function, config=config, **self.settings)

    def sweep(self, arguments: list[str]) -> Any:
        from src.core.cli import one_line_exit  # noqa: PLC0415

        try:
            return self.search.sweep(arguments)
        except Exception as error:  # bad settings or storage: one `error:` line (anything else re-raised in full)
            raise one_line_exit(error) from None
