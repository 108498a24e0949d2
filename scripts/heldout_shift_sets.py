"""Held-out accuracy of trained weights evaluated with each set of test-time shifts (no retraining).

The sets: none; S4, the four straight 1-px shifts (`tiny`'s); S8, all eight 1-px shifts (`record`'s); S8b, the
straight shifts by 1 and 2 px; S12, the eight 1-px shifts and the straight 2-px ones. Each checkpoint's net is
loaded once per set, with `model.test_time_shifts` replaced, and prints one line per set.

    python scripts/heldout_shift_sets.py RUN1/checkpoints/last.ckpt ...     (runs trained with data.val_split=10000)
    python scripts/heldout_shift_sets.py --sets none,S4 RUN/checkpoints/last.ckpt

On the test set, `python -m src.eval ckpt_path=... test_time_shifts=[...]` does the same for one set; with
`held_out=true` it reads the split from the checkpoint. Figures: results/screens/shift-range-one-cycle-batch-16.md.
"""

from __future__ import annotations

import torch
from heldout import held_out_batches, held_out_data, parser

from src.mnist.record import load_trained

STRAIGHT1 = [[1, 0], [-1, 0], [0, 1], [0, -1]]
DIAGONAL1 = [[1, 1], [1, -1], [-1, 1], [-1, -1]]
STRAIGHT2 = [[2, 0], [-2, 0], [0, 2], [0, -2]]
SETS = {
    "none": [],
    "S4": STRAIGHT1,
    "S8": STRAIGHT1 + DIAGONAL1,
    "S8b": STRAIGHT1 + STRAIGHT2,
    "S12": STRAIGHT1 + DIAGONAL1 + STRAIGHT2,
}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Prints `CKPT SET ACC %` per checkpoint and set; returns {ckpt: {set: held-out accuracy %}}."""
    command = parser(__doc__.splitlines()[0])
    command.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)} (default: all)")
    args = command.parse_args(argv)
    names = args.sets.split(",")
    if unknown := [name for name in names if name not in SETS]:
        command.error(f"--sets: {', '.join(unknown)} not among {', '.join(SETS)}")
    images, labels = held_out_batches(held_out_data(args))
    results: dict[str, dict[str, float]] = {}
    for path in args.ckpts:
        results[path] = {}
        for name in names:
            model = load_trained(path, test_time_shifts=SETS[name]).model
            with torch.inference_mode():
                predicted = torch.cat([model(batch).argmax(1) for batch in images])
            results[path][name] = 100 * (predicted == labels).float().mean().item()
            print(path, name, f"{results[path][name]:.2f} %")
    return results


if __name__ == "__main__":
    main()
