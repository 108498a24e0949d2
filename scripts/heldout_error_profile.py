"""What held-out runs miss, and how well they fit the plain training digits they trained on.

For each checkpoint: its held-out accuracy (with the recipe's shifts) and its accuracy and NLL on the plain,
unaugmented training images. Then over all of them: how many held-out images k runs missed, the accuracy of the
runs' averaged probabilities, the most frequent true → predicted pairs, and the missed images per true digit.

    python scripts/heldout_error_profile.py RUN1/checkpoints/last.ckpt RUN2/...   (runs with data.val_split=10000)

Its output for `tiny`'s five held-out runs: results/levers/tiny_error_profile_heldout_epyc_fp32.txt
(results/screens/tiny-errors.md).
"""

from __future__ import annotations

import collections
from typing import Any

import torch
from heldout import held_out_batches, held_out_data, parser

from src.mnist.classifier import normalised
from src.mnist.record import load_trained


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Prints the profile; returns its figures (per run: held-out and training accuracy %, training NLL)."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    datamodule = held_out_data(args)
    images, labels = held_out_batches(datamodule)
    val_probs, runs = [], {}
    for path in args.ckpts:
        model = load_trained(path).model
        with torch.inference_mode():  # held out, with the recipe's shifts
            val_probs.append(torch.cat([model(batch).exp() for batch in images]))
            correct = nll = 0.0  # the plain training images, as the net sees them
            for batch, y in datamodule._loader(datamodule.train_set, 1000, shuffle=False):
                logp = model.net(normalised(batch))
                correct += (logp.argmax(1) == y).sum().item()
                nll += torch.nn.functional.nll_loss(logp, y, reduction="sum").item()
        wrong = int((val_probs[-1].argmax(1) != labels).sum())
        n = len(datamodule.train_set)
        runs[path] = {"held_out": 100 * (1 - wrong / len(labels)), "training": 100 * correct / n, "nll": nll / n}
        print(
            f"{path}: held-out {runs[path]['held_out']:.2f} % ({wrong} wrong); "
            f"training {runs[path]['training']:.2f} %, nll {runs[path]['nll']:.4f}"
        )
    missed = torch.stack([p.argmax(1) != labels for p in val_probs])
    missed_by = {k: int((missed.sum(0) == k).sum()) for k in range(1, len(val_probs) + 1)}
    print("missed by k runs:", missed_by)
    averaged = 100 * (torch.stack(val_probs).mean(0).argmax(1) == labels).float().mean().item()
    print(f"mean of the runs' probabilities: {averaged:.2f} %")
    pairs = collections.Counter(
        (t, p)
        for probs, m in zip(val_probs, missed, strict=True)
        for t, p in zip(labels[m].tolist(), probs.argmax(1)[m].tolist(), strict=True)
    )
    print("true->pred:", pairs.most_common(12))
    per_digit = sorted(collections.Counter(labels[missed.any(0)].tolist()).items())
    print("missed by any run, per true digit:", per_digit)
    return {"runs": runs, "missed_by": missed_by, "averaged": averaged, "pairs": pairs, "per_digit": per_digit}


if __name__ == "__main__":
    main()
