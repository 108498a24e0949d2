"""Writes that a crash or a kill cannot leave half-done: the previous file stays whole until the new one is."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replaced_atomically(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` to write to; renamed onto `target` only once the write finished, so a crash
    or kill mid-write leaves the previous file whole."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_json_atomically(path: Path, record: dict[str, Any]) -> None:
    with replaced_atomically(path) as partial:
        partial.write_text(json.dumps(record, indent=2) + "\n")
