"""`python -m src.aggregate DIR... [--out STEM]`: the seed table (mean ± std per recipe) of every MNIST training run
below the DIRs (any run, sweep or outputs dir), as STEM.md and STEM.csv."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.mnist.report import write_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep dirs holding summary.json files")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.csv (default, for one DIR: its results.md/.csv)")
    args = parser.parse_args(argv)
    missing = [str(folder) for folder in args.dirs if not folder.is_dir()]
    if missing:
        sys.exit(f"error: not a directory: {', '.join(missing)}")
    if args.out is None and len(args.dirs) > 1:  # the first DIR's own table (a sweep's) is not replaced by another
        sys.exit(f"error: a table of {len(args.dirs)} dirs needs --out STEM (where to write STEM.md and STEM.csv)")
    try:
        print(write_table(args.dirs, args.out or args.dirs[0] / "results"), end="")
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
