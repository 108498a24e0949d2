"""`python -m src.eval ckpt_path=...`: test loss and accuracy of a checkpoint, written to the eval's `eval.json`
(its own name, so that tables of training runs never mistake an eval for one). `test_time_shifts=[]` (or other
shifts) evaluates the same weights with other test-time shifts than the run's own."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.core.checkpoint import model_from_checkpoint
from src.core.errors import one_line_exit
from src.core.files import write_json_atomically
from src.core.logs import quiet_known_noise
from src.core.provenance import provenance
from src.core.resolvers import register_resolvers

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, output_dir: Path) -> dict:
    ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    shifts = cfg.test_time_shifts
    overrides = None if shifts is None else {"test_time_shifts": OmegaConf.to_container(shifts)}
    model, checkpoint = model_from_checkpoint(ckpt_path, model_overrides=overrides)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    summary = {
        "ckpt_path": str(ckpt_path),
        "recipe": checkpoint["run_config"]["recipe"],
        "seed": checkpoint["run_config"]["seed"],
        "params": model.num_params,
        "epoch": checkpoint["epoch"] + 1,
        "test_acc": round(100.0 * test["test/acc"], 4),
        "test_loss": test["test/loss"],
        "test_time_shifts": [list(shift) for shift in model.test_time_shifts],
        **provenance(str(trainer.precision), trainer.strategy.root_device, trainer.world_size),
    }
    write_json_atomically(output_dir / "eval.json", summary)
    log.info("%s (recipe %s, epoch %d): test acc %.2f%%, test loss %.4f; written to %s", ckpt_path, summary["recipe"],
             summary["epoch"], summary["test_acc"], summary["test_loss"], output_dir / "eval.json")  # fmt: skip
    return summary


quiet_known_noise()
register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return evaluate(cfg, output_dir)["test_acc"]
    except Exception as error:
        raise one_line_exit(error, output_dir) from None


if __name__ == "__main__":
    main()
