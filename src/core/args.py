"""The command line of the entry points that must start fast (`src.predict`, `src.demo`): Hydra's `key=value`
form, read without Hydra (importing it alone costs more than predict's whole answer from an ONNX file)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from src.core.errors import UserError


def key_values(args: Sequence[str], defaults: Mapping[str, str | None], required: Sequence[str] = ()) -> dict:
    """`["image=a.png", "onnx=m.onnx"]` as a dict over `defaults`' keys; one line for an argument that is not
    `key=value`, a key that is not one of them, a key given twice, or a `required` key left out."""
    values: dict[str, str | None] = dict(defaults)
    given: set[str] = set()
    valid = ", ".join(f"{key}=..." for key in defaults)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise UserError(f"{arg!r} is not one of {valid}")
        if key in given:
            raise UserError(f"{key}= is given twice")
        given.add(key)
        values[key] = value
    for key in required:
        if not values.get(key):
            raise UserError(f"{key} has no value; give one on the command line: {key}=...")
    return values
