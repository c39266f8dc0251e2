"""A run's description: everything a process needs to generate its load, as immutable data.

It serialises to JSON and back unchanged, so that another process or machine (a worker) can start from it
alone. It carries no secret: the API key's variable is named (`api_key_env`), and each process reads the key
from its own environment into its live state (state.py).
"""

from __future__ import annotations

import os

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

    def headers(self) -> dict[str, str]:
        """This process's request headers: the API key from its own environment (KeyError naming the variable
        when it is not set)."""
        return api_key_headers(self.api_key_env)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> RunDescription:
        return cls.model_validate_json(data)


def api_key_headers(variable: str | None) -> dict[str, str]:
    """The Authorization header from the environment variable `variable` names (none when it names none); a
    KeyError naming the variable when it is not set."""
    if variable is None:
        return {}
    key = os.environ.get(variable)
    if not key:
        raise KeyError(variable)
    return {"Authorization": f"Bearer {key}"}
