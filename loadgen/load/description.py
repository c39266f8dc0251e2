"""A run's description: everything a process needs to generate its load, as immutable data.

It serialises to JSON and back unchanged, so that another process or machine (a worker) can start from it
alone. It carries no secret: the API key's variable is named (`api_key_env`), and each process reads the key
from its own environment into its live state (state.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from loadgen.spec.workload import RetrySpec, StageSpec, TimeoutSpec
from loadgen.target.probe import PromptSetup


class RunDescription(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    api_key_env: str | None = None  # where each process finds the API key (never the key itself)
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
