"""Option values argparse cannot check alone, turned into input errors that name the option."""

from __future__ import annotations

from loadgen.spec import SpecError


def numbers(option: str, text: str, kind: type = float) -> list:
    """Positive numbers separated by commas: "25,100,400"."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise SpecError(option, f"expected positive numbers separated by commas, got {text!r}")
    return values
