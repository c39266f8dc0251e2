"""What to send for a planned request: its path and body (vegeta's Targeter), from the run's prompt setup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.schedule.plan import Planned
from loadgen.spec.workload import StageSpec
from loadgen.target.bodies import PATHS, request_body, thinking_asked
from loadgen.target.conversation import Conversation, Part
from loadgen.target.probe import PromptSetup, TextCalibration
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

    def _tokenizer(self, stage: StageSpec) -> PromptTokenizer | None:
        return self.tokenizers.get(stage.requests.tokenizer or "")

    def _text(self, stage: StageSpec) -> bool:
        return stage.text_prompts or self.setup.text_only

    def prompt(self, stage: StageSpec, item: Planned) -> str | list[int]:
        text, tok = self._text(stage), self._tokenizer(stage)
        block = stage.load.trace.block if stage.load.trace is not None else 512
        if text and tok is not None:
            return tok.prompt(item.prompt_tokens, item.request_id, self.seed, item.prefix, block)
        length = item.prompt_tokens
        cal = self.setup.calibration.get(stage.api)
        if text and cal is not None and not item.prefix:  # prefix blocks keep their shape, a word a token
            length = cal.words(length)
        return make_prompt(length, item.request_id, self.seed, text, item.prefix, block)

    def target(self, stage: StageSpec, item: Planned) -> Target:
        return self._target(stage, item, self.prompt(stage, item))

    def _target(self, stage: StageSpec, item: Planned, prompt: str | list[int] | list) -> Target:
        model = stage.model or self.model
        thinking = thinking_asked(self.server, stage)
        body = request_body(stage.api, self.server, model, prompt, item.output_tokens, thinking=thinking)
        return Target(PATHS[stage.api], body, self._tokenizer(stage))

    # -- sessions --

    def _calibration(self, stage: StageSpec) -> TextCalibration | None:
        """How text is sized for this stage: None unless it sends text calibrated on the server."""
        if not self._text(stage) or self._tokenizer(stage) is not None:
            return None
        return self.setup.calibration.get(stage.api)

    def _part(self, stage: StageSpec, n_tokens: int, uid: int | str) -> Part:
        """n tokens of a conversation (a made-up message or answer, a system prompt), template included, from
        its own stream."""
        text, tok = self._text(stage), self._tokenizer(stage)
        if text and tok is not None:
            return tok.prompt(n_tokens, uid, self.seed, None)
        cal = self._calibration(stage)
        if cal is not None:
            n_tokens = cal.part_words(n_tokens)
        return make_prompt(n_tokens, uid, self.seed, text)

    def conversation(self, stage: StageSpec, item: Planned) -> Conversation:
        """A session's conversation as its first turn sent finds it: its shared system prompt (the same for every
        session that picked it), and the made-up turns of a session met partway."""
        turn = item.session
        assert turn is not None
        system = None if turn.system is None else self._part(stage, turn.system_tokens, f"system:{turn.system}")
        tok = self._tokenizer(stage)
        encode = tok.encode if tok is not None and not self._text(stage) else None
        convo = Conversation(stage.api, system, encode, self._calibration(stage))
        for j, (user, answer) in enumerate(turn.made_up):
            key = f"made-up:{item.request_id}:{j}"
            convo.add(self._part(stage, user, f"{key}:user"), self._part(stage, answer, f"{key}:answer"))
        return convo

    def turn(self, stage: StageSpec, item: Planned, convo: Conversation) -> tuple[Target, Part]:
        """A session's turn: the conversation so far and a new message (returned, to be added with its answer)."""
        assert item.session is not None
        convo.drop(item.session.drop)
        if convo.cal is None:
            message = self._part(stage, item.session.user_tokens, item.request_id)
        else:
            # The message takes what the prompt's planned length leaves: the template's tokens (each message's,
            # and the request's own) are paid from it, so the server counts the prompt as planned.
            message = make_prompt(convo.message_words(item.prompt_tokens), item.request_id, self.seed)
        return self._target(stage, item, convo.prompt(message)), message

    # -- agent tasks --

    def agent_context(self, stage: StageSpec, item: Planned) -> Conversation:
        """A fresh agent's context: the system prompt every agent of every task shares (so a server's prefix
        cache can hold it)."""
        t = item.task
        assert t is not None
        system = self._part(stage, t.system_tokens, "agent-system") if t.system_tokens else None
        return Conversation(stage.api, system, None, self._calibration(stage))

    def task_call(
        self, stage: StageSpec, item: Planned, convo: Conversation, read: list[tuple[str, int | None]]
    ) -> tuple[Target, Part]:
        """A task's call: its agent's context, then a message of the sub-agents' answers it reads (each its text and
        its tokens, where usage said) and its own new tokens (returned, to be added with its answer)."""
        t = item.task
        assert t is not None
        results = " ".join(text for text, _ in read)
        if convo.cal is None:
            new = self._part(stage, t.message_tokens, item.request_id)
        else:  # as a session's turn: the message takes what the planned prompt leaves, the answers read paid first
            paid = sum(n if n is not None else convo.count(text) for text, n in read)
            new = make_prompt(convo.message_words(item.prompt_tokens - round(paid)), item.request_id, self.seed)
        message = f"{results} {new}" if results else new
        return self._target(stage, item, convo.prompt(message)), message
