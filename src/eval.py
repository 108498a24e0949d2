"""`python -m src.eval ckpt_path=...`: test loss and accuracy of a checkpoint, written to the eval's `eval.json`
(its own name, so that tables of training runs never mistake an eval for one). `test_time_shifts=[]` (or other
shifts) evaluates the same weights with other test-time shifts than the run's own; `held_out=true` evaluates them
on the training images the run held out (`data.val_split`), where settings are chosen without the test set. A plain
loop on torch alone (no Lightning): the same images, net and precision as the training run's test."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F

from src.core.cli import in_new_dir
from src.core.errors import UserError
from src.core.files import write_json_atomically
from src.core.hardware import torch_device
from src.core.provenance import provenance
from src.core.resolvers import register_resolvers
from src.mnist.classifier import normalised
from src.mnist.files import evaluation_digits
from src.mnist.record import RunRecord, Split, load_trained

log = logging.getLogger(__name__)
# Training's `trainer.precision` values an evaluation runs in, and the dtype each autocasts to (None: float32 as is).
PRECISIONS = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def evaluate(cfg: DictConfig, output_dir: Path) -> dict:
    device = torch_device(cfg.device)
    check_precision(cfg.precision)
    ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    shifts = None if cfg.test_time_shifts is None else OmegaConf.to_container(cfg.test_time_shifts)
    model, record, epochs = load_trained(ckpt_path, test_time_shifts=shifts)
    split = held_out_split(record, ckpt_path) if cfg.held_out else None
    images, labels = evaluation_digits(Path(cfg.data.root).expanduser().resolve(), cfg.data.download,
                                       **(asdict(split) if split else {}))  # fmt: skip
    accuracy, loss = score(model, images, labels, cfg.data.eval_batch_size, device, cfg.precision)
    stage = "val" if cfg.held_out else "test"
    summary = {
        "ckpt_path": str(ckpt_path),
        "recipe": record.recipe,
        "seed": record.seed,
        "params": model.num_params,
        "epoch": epochs,
        **(asdict(split) if split else {}),
        f"{stage}_acc": round(100.0 * accuracy, 4),
        f"{stage}_loss": loss,
        "test_time_shifts": [list(shift) for shift in model.test_time_shifts],
        **provenance(cfg.precision, device),
    }
    write_json_atomically(output_dir / "eval.json", summary)
    log.info("%s (recipe %s, epoch %d): %s acc %.2f%%, %s loss %.4f; written to %s", ckpt_path, summary["recipe"],
             summary["epoch"], stage, summary[f"{stage}_acc"], stage, summary[f"{stage}_loss"],
             output_dir / "eval.json")  # fmt: skip
    return summary


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"precision={precision} is not one of {', '.join(PRECISIONS)}")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """What training's `trainer.precision` computes evaluation in: float32, or autocast to bf16 or fp16."""
    check_precision(precision)
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def score(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device,
    precision: str,
) -> tuple[float, float]:  # fmt: skip
    """Accuracy (a fraction) and mean NLL of `model` on uint8 `images`, in batches of `batch_size`."""
    model.to(device)
    correct, loss_sum = 0, 0.0
    with torch.inference_mode(), autocast(precision, device):
        for start in range(0, len(images), batch_size):
            targets = labels[start : start + batch_size].to(device)
            log_probs = model(normalised(images[start : start + batch_size].to(device)))
            loss_sum += F.nll_loss(log_probs, targets, reduction="sum").item()
            correct += int((log_probs.argmax(dim=1) == targets).sum())
    return correct / len(images), loss_sum / len(images)


def held_out_split(record: RunRecord, ckpt_path: Path) -> Split:
    """The training images the checkpoint's run held out: the split comes from its record, so that an eval never
    scores a run on images it learned from."""
    if not record.split.val_split:
        raise UserError(
            f"held_out=true needs a run trained with data.val_split=N, and ckpt_path={ckpt_path} learned from every "
            "training image; evaluate it on the test set (held_out=false)"
        )
    return record.split


register_resolvers()  # before @hydra.main composes the config


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    summary = in_new_dir(cfg, evaluate)  # eval.json, or a training run's files: never overwritten
    return summary["val_acc" if cfg.held_out else "test_acc"]


if __name__ == "__main__":
    main()
