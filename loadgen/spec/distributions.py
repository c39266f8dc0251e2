"""The building blocks of workload files: strict models, and distributions of lengths (tokens) and times
(seconds), where a bare number means a fixed value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fixed(Strict):
    dist: Literal["fixed"] = "fixed"
    value: PositiveInt


def _ordered(dist: Any) -> Any:
    """A distribution's `min` must not exceed its `max` (no max: unbounded above)."""
    if dist.max is not None and dist.min > dist.max:
        raise ValueError(f"min ({dist.min}) must not exceed max ({dist.max})")
    return dist


class Uniform(Strict):
    dist: Literal["uniform"]
    min: PositiveInt
    max: PositiveInt

    _ordered = model_validator(mode="after")(_ordered)


class Normal(Strict):
    """Normal (or, with dist: lognormal, log-normal) lengths with the given mean and std in tokens, clipped."""

    dist: Literal["normal", "lognormal"]
    mean: PositiveFloat
    std: Annotated[float, Field(ge=0)]
    min: PositiveInt = 1
    max: PositiveInt | None = None

    _ordered = model_validator(mode="after")(_ordered)


class Choice(Strict):
    dist: Literal["choice"]
    values: Annotated[list[PositiveInt], Field(min_length=1)]
    weights: list[Annotated[float, Field(ge=0)]] | None = None

    @model_validator(mode="after")
    def _weights(self) -> Choice:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(f"weights has {len(self.weights)} entries, values {len(self.values)}")
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be zero")
        return self


def _bare_number(kinds: type | tuple[type, ...]) -> Callable[[Any], Any]:
    """A bare number in YAML means a fixed value; bools are ints in Python but never a length or a time."""

    def fixed(value: Any) -> Any:
        if isinstance(value, kinds) and not isinstance(value, bool):
            return {"dist": "fixed", "value": value}
        return value

    return fixed


LengthSpec = Annotated[
    Fixed | Uniform | Normal | Choice,
    BeforeValidator(_bare_number(int)),
    Field(discriminator="dist"),
]
OptionalLength = Annotated[
    Annotated[Fixed | Uniform | Normal | Choice, Field(discriminator="dist")] | None,
    BeforeValidator(_bare_number(int)),
]


class Seconds(Strict):
    """A fixed time in seconds (a bare number in YAML)."""

    dist: Literal["fixed"] = "fixed"
    value: Annotated[float, Field(ge=0)]


class UniformSeconds(Strict):
    dist: Literal["uniform"]
    min: Annotated[float, Field(ge=0)]
    max: Annotated[float, Field(ge=0)]

    _ordered = model_validator(mode="after")(_ordered)


class ExponentialSeconds(Strict):
    dist: Literal["exponential"]
    mean: PositiveFloat


class LognormalSeconds(Strict):
    """Log-normal times with the given mean and std in seconds."""

    dist: Literal["lognormal"]
    mean: PositiveFloat
    std: Annotated[float, Field(ge=0)]


SecondsSpec = Annotated[
    Seconds | UniformSeconds | ExponentialSeconds | LognormalSeconds,
    BeforeValidator(_bare_number((int, float))),
    Field(discriminator="dist"),
]


OptionalSeconds = Annotated[
    Annotated[Seconds | UniformSeconds | ExponentialSeconds | LognormalSeconds, Field(discriminator="dist")] | None,
    BeforeValidator(_bare_number((int, float))),
]
