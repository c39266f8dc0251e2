"""A run's description: everything a process needs to generate its load, as immutable data.

It serialises to JSON and back unchanged, so that another process or machine (a worker) can start from it
alone. It holds the request headers, which may carry an API key: they never appear in its repr, and the
description is never printed or stored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from loadgen.spec.workload import RetrySpec, StageSpec, TimeoutSpec
from loadgen.target.probe import PromptSetup


class RunDescription(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    server: str  # the server family, for exact output lengths (see target/bodies.py)
    model: str
    seed: int
    timeouts: TimeoutSpec
    retry: RetrySpec
    stages: tuple[StageSpec, ...]
    prompts: PromptSetup = PromptSetup()

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> RunDescription:
        return cls.model_validate_json(data)
