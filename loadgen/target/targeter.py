"""What to send for a planned request: its path and body (vegeta's Targeter), from the run's prompt setup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.schedule.plan import Planned
from loadgen.spec.workload import StageSpec
from loadgen.target.bodies import PATHS, request_body
from loadgen.target.probe import PromptSetup
from loadgen.target.prompts import make_prompt
from loadgen.target.tokenize import PromptTokenizer, tokenizer


@dataclass(frozen=True, slots=True)
class Target:
    path: str
    body: bytes
    tokenizer: PromptTokenizer | None  # counts the output when the server reports no usage


class Targeter:
    """Builds each request: token IDs, or text (exact with the stage's tokenizer, else sized by the endpoint's
    calibration, else a word a token), with the server family's options for an exact output length."""

    def __init__(self, server: str, model: str, seed: int, setup: PromptSetup, stages: Sequence[StageSpec]):
        self.server, self.model, self.seed, self.setup = server, model, seed, setup
        # Loaded once per process; a worker process builds its own from the same description.
        self.tokenizers = {p: tokenizer(p) for p in {s.requests.tokenizer for s in stages} if p}

    def prompt(self, stage: StageSpec, item: Planned) -> str | list[int]:
        text = stage.text_prompts or self.setup.text_only
        tok = self.tokenizers.get(stage.requests.tokenizer or "")
        block = stage.load.trace.block if stage.load.trace is not None else 512
        if text and tok is not None:
            return tok.prompt(item.prompt_tokens, item.request_id, self.seed, item.prefix, block)
        length = item.prompt_tokens
        cal = self.setup.calibration.get(stage.api)
        if text and cal is not None and not item.prefix:  # prefix blocks keep their shape, a word a token
            length = cal.words(length)
        return make_prompt(length, item.request_id, self.seed, text, item.prefix, block)

    def target(self, stage: StageSpec, item: Planned) -> Target:
        body = request_body(
            stage.api, self.server, stage.model or self.model, self.prompt(stage, item), item.output_tokens
        )
        return Target(PATHS[stage.api], body, self.tokenizers.get(stage.requests.tokenizer or ""))
