"""The MNIST files without Lightning: found (or extracted from their .gz archives, or downloaded), checked, read as
uint8 tensors, and the fixed hold-out split; `src.mnist.data`'s loaders and `src.eval`/`src.export` read them so."""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from src.core.errors import UserError, reason_of
from src.core.files import replaced_atomically

TRAIN_SIZE = 60_000
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


OFFICIAL_ARCHIVES = dict(MNIST.resources)  # `<raw file>.gz` → its md5, as most mirrors ship MNIST


def missing_raw_files(root: Path) -> list[str]:
    """The MNIST files torchvision needs that are not under `root/MNIST/raw`."""
    return [name for name in RAW_FILES if not (root / "MNIST" / "raw" / name).is_file()]


def archives_of(root: Path, names: Sequence[str]) -> dict[str, Path]:
    """Each raw file's `.gz` where one is, in `root/MNIST/raw` or in `root` itself (a folder of the four archives)."""
    found = {}
    for name in names:
        for folder in (root / "MNIST" / "raw", root):
            if (folder / f"{name}.gz").is_file():
                found[name] = folder / f"{name}.gz"
                break
    return found


def extract_archives(root: Path, checksums: Mapping[str, str] = OFFICIAL_ARCHIVES) -> None:
    """The missing raw files from their `.gz` archives, each checked against its md5 first, written into
    `root/MNIST/raw` as new files (nothing there is replaced)."""
    raw = root / "MNIST" / "raw"
    for name, archive in archives_of(root, missing_raw_files(root)).items():
        digest = hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()
        if digest != checksums[archive.name]:
            raise UserError(
                f"{archive} is not the official MNIST archive: md5 {digest}, expected {checksums[archive.name]}"
            )
        raw.mkdir(parents=True, exist_ok=True)
        try:
            with gzip.open(archive) as source, replaced_atomically(raw / name) as partial:
                partial.write_bytes(source.read())
        except (OSError, EOFError) as error:
            raise UserError(f"{archive} cannot be extracted into {raw} ({error})") from None


def idx_shape(path: Path) -> tuple[int, ...]:
    """The shape an MNIST IDX file declares, after checking its magic number and length (torchvision would fail
    deep inside with an assertion, or read a truncated file as garbage)."""
    dims = 3 if "images" in path.name else 1
    with path.open("rb") as handle:
        header = handle.read(4 + 4 * dims)
    expected_magic = 0x0800 + dims
    magic = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if magic != expected_magic:
        found = "none (file too short)" if magic is None else f"0x{magic:08x}"
        raise UserError(f"{path} is not an MNIST IDX file: magic number {found}, expected 0x{expected_magic:08x}")
    shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected_size = len(header) + math.prod(shape)
    if len(header) < 4 + 4 * dims or path.stat().st_size != expected_size:
        raise UserError(
            f"{path} is truncated or corrupt: {path.stat().st_size:,} bytes, its header {shape} needs {expected_size:,}"
        )
    return shape


def check_raw_files(raw: Path) -> None:
    """Magic numbers, lengths, and as many labels as images in each split."""
    for split in ("train", "t10k"):
        images, labels = idx_shape(raw / f"{split}-images-idx3-ubyte"), idx_shape(raw / f"{split}-labels-idx1-ubyte")
        if images[0] != labels[0]:
            raise UserError(f"{raw}/{split}-*-ubyte disagree: {images[0]:,} images but {labels[0]:,} labels")


def prepare_files(root: Path, download: bool) -> None:
    """Use the files if present; otherwise download them, or stop with one line saying how to provide them."""
    if root.exists() and not root.is_dir():
        raise UserError(f"data.root={root} is a file; it must be a folder holding MNIST/raw/")
    extract_archives(root)
    missing = missing_raw_files(root)
    if not missing:
        check_raw_files(root / "MNIST" / "raw")
        return
    archives = archives_of(root, RAW_FILES)
    seen = f"; of the .gz archives it holds only {', '.join(map(str, archives.values()))}" if archives else ""
    hint = (
        f"MNIST is not under {root}/MNIST/raw (missing {', '.join(missing)}{seen}); set DATA_DIR or "
        "data.root to a folder holding MNIST/raw/ with the four *-ubyte files or their four .gz archives"
    )
    if not download:
        raise UserError(f"{hint} (data.download=false)")
    try:
        MNIST(root, train=True, download=True)
        MNIST(root, train=False, download=True)
    except (OSError, RuntimeError) as error:
        reason = reason_of(error).rstrip(":")
        raise UserError(f"{hint}, or run once with network access (download failed: {reason})") from error


def read_digits(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The training (or test) images as uint8 N×28×28 and their labels, from files `prepare_files` has checked."""
    raw = MNIST(root, train=train)
    return raw.data, raw.targets


def split_order(size: int, split_seed: int) -> list[int]:
    """The training images' order for a hold-out: the first `val_split` are held out, the rest trained on."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(split_seed)).tolist()


def evaluation_digits(
    root: Path, download: bool, val_split: int = 0, split_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels, or with `val_split` > 0 the training images a run held out (the first
    `val_split` of `split_order(split_seed)`): what an evaluation scores on, outside training."""
    prepare_files(root, download)
    images, labels = read_digits(root, train=val_split > 0)
    if not val_split:
        return images, labels
    held_out = split_order(len(images), split_seed)[:val_split]
    return images[held_out], labels[held_out]
