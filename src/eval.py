"""`python -m src.eval ckpt_path=...`: test loss and accuracy of a checkpoint, written to the eval's `eval.json`
(its own name, so that tables of training runs never mistake an eval for one). `test_time_shifts=[]` (or other
shifts) evaluates the same weights with other test-time shifts than the run's own; `held_out=true` evaluates them
on the training images the run held out (`data.val_split`), where settings are chosen without the test set."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.core.cli import check_new_run_dir, one_line_exit
from src.core.config import check_all_set
from src.core.errors import UserError
from src.core.files import write_json_atomically
from src.core.logs import quiet_known_noise
from src.core.provenance import provenance
from src.core.resolvers import register_resolvers
from src.mnist.record import RunRecord, Split, load_trained

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, output_dir: Path) -> dict:
    ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    shifts = cfg.test_time_shifts
    overrides = None if shifts is None else {"test_time_shifts": OmegaConf.to_container(shifts)}
    model, record, epochs = load_trained(ckpt_path, model_overrides=overrides)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    split = asdict(held_out_split(record, ckpt_path)) if cfg.held_out else {}
    datamodule = instantiate(cfg.data, **split)
    datamodule.prepare_data()
    run_stage, stage = (trainer.validate, "val") if cfg.held_out else (trainer.test, "test")
    metrics = run_stage(model, datamodule=datamodule, verbose=False)[0]
    summary = {
        "ckpt_path": str(ckpt_path),
        "recipe": record.recipe,
        "seed": record.seed,
        "params": model.num_params,
        "epoch": epochs,
        **split,
        f"{stage}_acc": round(100.0 * metrics[f"{stage}/acc"], 4),
        f"{stage}_loss": metrics[f"{stage}/loss"],
        "test_time_shifts": [list(shift) for shift in model.test_time_shifts],
        **provenance(str(trainer.precision), trainer.strategy.root_device, trainer.world_size),
    }
    write_json_atomically(output_dir / "eval.json", summary)
    log.info("%s (recipe %s, epoch %d): %s acc %.2f%%, %s loss %.4f; written to %s", ckpt_path, summary["recipe"],
             summary["epoch"], stage, summary[f"{stage}_acc"], stage, summary[f"{stage}_loss"],
             output_dir / "eval.json")  # fmt: skip
    return summary


def held_out_split(record: RunRecord, ckpt_path: Path) -> Split:
    """The training images the checkpoint's run held out: the split comes from its record, so that an eval never
    scores a run on images it learned from."""
    if not record.split.val_split:
        raise UserError(
            f"held_out=true needs a run trained with data.val_split=N, and ckpt_path={ckpt_path} learned from every "
            "training image; evaluate it on the test set (held_out=false)"
        )
    return record.split


quiet_known_noise()
register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_all_set(cfg)
        check_new_run_dir(output_dir)  # eval.json, or a training run's files: never overwritten
        summary = evaluate(cfg, output_dir)
        return summary["val_acc" if cfg.held_out else "test_acc"]
    except Exception as error:
        raise one_line_exit(error, output_dir) from None


if __name__ == "__main__":
    main()
