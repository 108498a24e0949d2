"""What an MNIST checkpoint carries beside its weights, written and read only here: the run's `RunRecord` (recipe,
seed, the resolved model config, the net and its settings, the training split, the settings that decide what it
learns), and what is built from it: a trained net for `src.eval`, `src.predict`, `src.export` and the page (on torch
alone: nothing here imports Lightning), a distillation teacher, and a resumed run's checks."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from src.core.checkpoint import CONFIG_KEY, load_checkpoint
from src.core.errors import UserError, reason_of
from src.mnist import nets
from src.mnist.classifier import TrainedNet
from src.mnist.distill import Distillation

FORMAT_VERSION = 1  # records without the field were written in this same form


@dataclass(frozen=True)
class Split:
    """The training images a run held out: `val_split` of them, drawn with `split_seed` (0: none held out)."""

    val_split: int
    split_seed: int


def dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# The `_target_`s a checkpoint's model config may name: the training module (by name, as importing it imports
# Lightning; tests/mnist/test_record.py checks the name against the class), distillation (it stores the teacher's
# path; the teacher is read only when a training run starts), every net of src/mnist/nets.py, the optimisers and
# schedules of conf/optimizer and conf/scheduler (spelled as those configs spell them).
ALLOWED_TARGETS = frozenset({
    "src.mnist.module.MNISTClassifier",
    dotted_name(Distillation),
    *(dotted_name(cls) for cls in vars(nets).values()
      if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == nets.__name__),
    "torch.optim.SGD",
    "torch.optim.Adam",
    "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.OneCycleLR",
})  # fmt: skip

# Settings that change where files are, how fast a run goes or how it is evaluated, not what it learns:
# `model.optimizer` and `model.scheduler` repeat `optimizer` and `scheduler`, compared under the names a command line
# gives them; `optimizer.foreach` gives the same numbers; `model.max_params` is a size check.
NOT_LEARNING = ("data.root", "data.download", "data.num_workers", "data.eval_batch_size", "model.compile_mode",
                "model.channels_last", "model.optimizer", "model.scheduler", "model.test_time_shifts",
                "model.max_params", "model.distillation.checkpoint", "optimizer.foreach")  # fmt: skip
TRAINER_LEARNING = ("max_epochs", "max_steps", "limit_train_batches", "accumulate_grad_batches", "gradient_clip_val")
INTERPOLATION = re.compile(r"(\\*)\$\{")  # `${...}` and the backslashes before it (OmegaConf's escapes)


@dataclass(frozen=True)
class RunRecord:
    """A run's record in its checkpoints (plain data under `run_config`): enough to rebuild the model without the
    run dir, to name the net and settings that fit its weights, to say which images it learned from, and to check
    that a resumed run learns as it started (`learning`: each setting as compact JSON, grouped by config node)."""

    recipe: str
    seed: int
    model: dict[str, Any]
    net_class: str
    net_settings: dict[str, Any]
    split: Split
    learning: dict[str, dict[str, str]]
    format_version: int = FORMAT_VERSION

    @classmethod
    def of_run(cls, cfg: DictConfig, net: nn.Module) -> RunRecord:
        return cls(
            recipe=cfg.recipe,
            seed=cfg.seed,
            model=OmegaConf.to_container(cfg.model, resolve=True),
            net_class=type(net).__name__,
            net_settings=getattr(net, "settings", {}),  # the published nets have fixed widths: none
            split=Split(cfg.data.val_split, cfg.data.split_seed),
            learning=learning_settings(cfg),
        )

    def as_plain_data(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "recipe": self.recipe,
            "seed": self.seed,
            "model": self.model,
            "net": {"class": self.net_class, "settings": self.net_settings},
            "data": asdict(self.split),
            "learning": self.learning,
        }

    @classmethod
    def of_checkpoint(cls, checkpoint: dict[str, Any], path: str | Path, key: str = "ckpt_path") -> RunRecord:
        """The record of a checkpoint `load_checkpoint` has read, or one line saying why there is none to use."""
        data = checkpoint.get(CONFIG_KEY)
        if data is None:
            raise UserError(f"{key}={path} has no run record: it was not written by src.train, so its net is unknown")
        version = data.get("format_version", FORMAT_VERSION) if isinstance(data, dict) else None
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise UserError(
                f"{key}={path} holds a run record of format {version}, newer than this code reads "
                f"({FORMAT_VERSION}); update this project"
            )
        try:
            return cls(
                recipe=data["recipe"],
                seed=data["seed"],
                model=dict(data["model"]),
                net_class=data["net"]["class"],
                net_settings=dict(data["net"]["settings"]),
                split=Split(data["data"]["val_split"], data["data"]["split_seed"]),
                learning=dict(data["learning"]),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as error:
            missing = f"no {error}" if isinstance(error, KeyError) else type(error).__name__
            raise UserError(
                f"{key}={path} holds a run record this code cannot read ({missing}): it was written by an earlier "
                "version of this project; train it again with src.train"
            ) from None

    def write_into(self, checkpoint: dict[str, Any]) -> None:
        """Stores the record in a checkpoint Lightning is about to save (`callbacks.RecordInCheckpoint`)."""
        checkpoint[CONFIG_KEY] = self.as_plain_data()

    def build_net(self, test_time_shifts: Sequence[Sequence[int]] | None = None) -> TrainedNet:
        """The untrained net of this record with the recipe's test-time shifts, or `test_time_shifts` instead."""
        settings = {name: value for name, value in self.model["net"].items() if name != "_target_"}
        net = allowed_class(self.model["net"]["_target_"])(**settings)
        shifts = self.model.get("test_time_shifts", []) if test_time_shifts is None else test_time_shifts
        return TrainedNet(net, shifts, channels_last=bool(self.model.get("channels_last")))

    def load_weights(self, model: nn.Module, state_dict: dict[str, Any], path: str | Path, key: str) -> None:
        """Loads the weights into `model`, or says in one line which net and settings they fit (not a size-mismatch
        traceback)."""
        shapes = {name: tuple(value.shape) for name, value in state_dict.items()}
        if shapes == {name: tuple(value.shape) for name, value in model.state_dict().items()}:
            model.load_state_dict(state_dict)
            return
        target = self.model["net"]["_target_"]
        settings = "".join(f" model.net.{name}={json.dumps(value, separators=(',', ':'))}" for name, value in
                           settings_with_defaults(target, self.net_settings).items())  # fmt: skip
        raise UserError(
            f"{key}={path} does not fit this run's {type(model.net).__name__}: it holds recipe {self.recipe}'s "
            f"{self.net_class}; use model={self.recipe}{settings}"
        )


def settings_with_defaults(target: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A record's net settings, those added to the net since it was written at their defaults, which is what the run
    had: a hint that names only the stored ones would build today's recipe value instead. Rebuilding checks them
    too; settings no net of `target` takes are named as stored."""
    if not settings:
        return settings
    try:
        return allowed_class(target)(**settings).settings
    except (TypeError, ValueError, UserError):
        return settings


def allowed_class(target: str) -> type:
    """The class an allowlisted `_target_` names (a checkpoint's targets are checked when it is read)."""
    if target not in ALLOWED_TARGETS:
        raise UserError(f"_target_={target!r} is not one of {', '.join(sorted(ALLOWED_TARGETS))}")
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def read_checkpoint(
    path: str | Path, key: str = "ckpt_path", contents: bytes | None = None
) -> tuple[dict[str, Any], RunRecord]:
    """The checkpoint (weights-only, its targets checked) and its record; one line naming `key` if refused.
    `contents`: the file's bytes, where already read."""
    checkpoint = load_checkpoint(path, ALLOWED_TARGETS, key, contents)
    return checkpoint, RunRecord.of_checkpoint(checkpoint, path, key)


class Trained(NamedTuple):
    model: TrainedNet  # in eval mode
    record: RunRecord
    epochs: int  # epochs it trained


def load_trained(
    path: str | Path,
    key: str = "ckpt_path",
    test_time_shifts: Sequence[Sequence[int]] | None = None,
    contents: bytes | None = None,
) -> Trained:
    """The trained net of a checkpoint `src.train` wrote, with its record; `test_time_shifts` replace the recipe's.
    `contents`: the file's bytes, where already read (to hash what is loaded)."""
    checkpoint, record = read_checkpoint(path, key, contents)
    try:
        model = record.build_net(test_time_shifts)
    except (KeyError, TypeError, ValueError) as error:  # a handed-in record whose net settings no net takes
        raise UserError(
            f"{key}={path} holds a record whose net cannot be built ({type(error).__name__}: {error})"
        ) from None
    record.load_weights(model, checkpoint["state_dict"], path, key)
    return Trained(model.eval(), record, checkpoint["epoch"] + 1)


def load_teacher(path: str | Path, split: Split) -> nn.Module:
    """A distillation teacher's net, refused if it learned from images this run holds out: a held-out score must
    come from images neither net has learned from."""
    teacher = load_trained(path, key="distill.checkpoint")
    trained_on = teacher.record.split
    if split.val_split and trained_on != split:  # holding nothing out, any teacher's split will do
        raise UserError(
            f"distill.checkpoint={path} trained with data.val_split={trained_on.val_split} (split_seed "
            f"{trained_on.split_seed}), so it has learned from images this run holds out (data.val_split="
            f"{split.val_split}, split_seed {split.split_seed}); train the teacher with the same split"
        )
    return teacher.model.net


def check_same_learning(started: dict[str, dict[str, str]], now: dict[str, dict[str, str]], run_dir: Path) -> None:
    """A run continued in its own dir learns as it `started` (a record's `learning`, or `learning_settings_as_data`
    of its first config), or stops in one line naming what changed."""
    changes = learning_changes(started, now)
    if changes:
        raise UserError(
            f"the run in {run_dir} started with {'; '.join(changes)}: resume it under those settings (its first "
            f"command's overrides are in {run_dir / '.hydra' / 'overrides.yaml'}, and a recipe file edited since "
            "must be restored), or start a new run"
        )


def learning_settings(cfg: DictConfig) -> dict[str, dict[str, str]]:
    """The resolved settings that decide what a run learns, by the paths a command line gives them, each value as
    compact JSON, grouped by the config node they come from (`{"data.batch_size": {"data.batch_size": "32"},
    "scheduler": {"scheduler.interval": "\"step\"", ...}}`): what a resumed run must share with its start, as a
    recipe file may have changed in between. Strings, so that a checkpoint's `_target_` check sees none of the
    augmentation's classes in them (they are compared, never instantiated)."""
    nodes = {
        "seed": cfg.seed,
        **{f"trainer.{key}": cfg.trainer.get(key) for key in TRAINER_LEARNING},
        "optimizer": cfg.optimizer,
        "scheduler": cfg.scheduler,
        "callbacks.ema": cfg.callbacks.get("ema"),
        **{f"model.{key}": value for key, value in cfg.model.items()},
        **{f"data.{key}": value for key, value in cfg.data.items()},
    }
    settings = {}
    for path, node in nodes.items():
        if path in NOT_LEARNING:
            continue
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node
        leaves = {key: json.dumps(leaf, separators=(",", ":")) for key, leaf in flattened(value, path).items()}
        settings[path] = {key: leaf for key, leaf in leaves.items() if key not in NOT_LEARNING}
    return settings


def saved_learning_settings(config_file: Path) -> dict[str, dict[str, str]]:
    """`learning_settings_as_data` of the config a run's dir kept (`.hydra/config.yaml`), or one line if it is not
    a run's config."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
        if not isinstance(saved, dict):
            raise ValueError("not a mapping")
        return learning_settings_as_data(saved)
    except (OSError, ValueError, AttributeError, yaml.YAMLError, OmegaConfBaseException) as error:
        raise UserError(f"{config_file} cannot be read as a run's config ({reason_of(error)})") from None


def learning_settings_as_data(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """`learning_settings` of a config read as data: every interpolation stays its text (`${optimizer.lr}`,
    `${oc.env:...}`), so that nothing in a file is resolved or called and a saved config compares with the live one
    (given here unresolved) setting by setting."""
    return learning_settings(OmegaConf.create(as_text(config)))


def as_text(tree: Any) -> Any:
    """`tree` with each `${` escaped for OmegaConf (the backslashes before it doubled, so that they stay text too)."""
    if isinstance(tree, dict):
        return {key: as_text(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [as_text(value) for value in tree]
    if isinstance(tree, str):
        return INTERPOLATION.sub(lambda found: found.group(1) * 2 + "\\${", tree)
    return tree


def flattened(tree: Any, path: str) -> dict[str, Any]:
    """{"batch_size": 32} under "data" as {"data.batch_size": 32}; lists are values, as a command line gives them."""
    if not isinstance(tree, dict) or not tree:
        return {path: tree}
    return {key: value for name, child in tree.items() for key, value in flattened(child, f"{path}.{name}").items()}


def learning_changes(saved: dict[str, dict[str, str]], current: dict[str, dict[str, str]]) -> list[str]:
    """`name=started (now current)` for each setting that differs, JSON values compared as values (0 is 0.0). A node
    one side lacks is not compared, nor a setting the start lacks that is now off (0, false, null, empty): both were
    added to the project since, and a key added to a recipe must default to what runs did before it (off); otherwise,
    within a node, a setting one side lacks is null there (a scheduler switched off, another optimiser)."""
    changes = []
    for node in sorted(saved.keys() & current.keys()):
        before, now = saved[node], current[node]
        for key in sorted(before.keys() | now.keys()):
            old, new = (json.loads(side.get(key, "null")) for side in (before, now))
            if key not in before:  # added to the project since the start: a change only where switched on
                if new not in (0, None, "", [], {}):
                    changes.append(f"{key} unset, i.e. off (now {as_override(new)})")
            elif old != new:
                changes.append(f"{key}={as_override(old)} (now {as_override(new)})")
    return changes


def as_override(value: Any) -> str:
    """A value as a command line writes it: `step`, not `"step"`."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
