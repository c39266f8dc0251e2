"""A session's conversation as the server sees it, growing turn by turn.

Turn k+1's prompt is exactly turn k's prompt, then the answer the server returned to it, then the new message: a
chat conversation as its list of messages, a completions prompt as one text or one token-ID sequence. So the
server's prefix cache can hold everything up to the new message, as it would for a real chat or agent loop.

With text calibrated on the server, it also keeps an account of its content's tokens as the server counts them,
so that each new message takes what the planned prompt leaves once the template and the context are paid for
(`message_words`). The server's count of each prompt sent corrects the account, so that an estimate's error (an
answer re-tokenized, a role's template) does not pile up over the turns. An answer that ended before its planned
length is not made up for: the plan assumes answers as long as asked for (docs/sessions.md), and a server that
cannot be asked for exact lengths gives prompts that much shorter.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from loadgen.target.bodies import Message
from loadgen.target.probe import TextCalibration

Part = str | list[int]


def size(part: Part) -> float:
    """A part's tokens at one a word (text) or one an ID: what the server counts when nothing is calibrated."""
    return len(part) if isinstance(part, list) else len(part.split())


class Conversation:
    def __init__(
        self,
        api: str,
        system: Part | None,
        encode: Callable[[str], list[int]] | None = None,
        cal: TextCalibration | None = None,
    ):
        self.api = api
        self.system = system
        self.encode = encode  # token-ID prompts: an answer's text into the IDs the next turn resends
        self.cal = cal  # how the server counts text, when it was calibrated
        self.turns: list[tuple[Part, Part]] = []  # each earlier turn in context: its message and its answer
        self.tokens: list[float] = []  # each earlier turn's content tokens as the server counts them (estimated)
        self.short: list[int] = []  # each earlier turn's answer: how much shorter than planned it came back
        self.sent: float | None = None  # the count expected of the last prompt sent

    def count(self, part: Part) -> float:
        """A part loadgen made, in tokens as the server counts them."""
        return size(part) * (self.cal.per_word if self.cal is not None else 1.0)

    def add(
        self,
        message: Part,
        answer: str | Part,
        planned: int | None = None,
        returned: int | None = None,
        counted: int | None = None,
    ) -> None:
        """A turn is over: its message and answer stay in the context. An answer the server returned has its
        `planned` length and the length it `returned` (usage's, when reported); one loadgen made up has neither
        and is counted. `counted`: the server's count of the prompt that carried `message`, which corrects the
        account."""
        if self.encode is not None and isinstance(answer, str):
            answer = self.encode(answer)
        self.turns.append((message, answer))
        length = planned if returned is None else returned
        tokens = self.count(message) + (self.count(answer) if length is None else length)
        if counted is not None and self.sent is not None:
            tokens += counted - self.sent
        self.tokens.append(tokens)
        self.short.append(0 if planned is None or returned is None else max(0, planned - returned))
        self.sent = None

    def fork(self) -> Conversation:
        """A copy that grows on its own: a sub-agent that starts from its parent's context."""
        c = copy.copy(self)
        c.turns, c.tokens, c.short, c.sent = list(self.turns), list(self.tokens), list(self.short), None
        return c

    def drop(self, n: int) -> None:
        """The oldest n turns leave the context (it would not fit the model's otherwise)."""
        del self.turns[:n]
        del self.tokens[:n]
        del self.short[:n]

    def _template(self) -> float:
        """The template's tokens of the next prompt (a chat's: the context's messages and the new one)."""
        assert self.cal is not None
        messages = (1 if self.system else 0) + 2 * len(self.turns) + 1 if self.api == "chat" else 1
        return self.cal.template(messages)

    def _context(self) -> float:
        return (self.count(self.system) if self.system else 0.0) + sum(self.tokens)

    def message_words(self, tokens: int) -> int:
        """Words for the next message so that the server counts `tokens` in the whole prompt (less what answers in
        context fell short of their plan): what the template and the context leave, at least a word. Needs a
        calibration."""
        assert self.cal is not None
        left = tokens - sum(self.short) - self._template() - self._context()
        return max(1, round(left / self.cal.per_word))

    def prompt(self, message: Part) -> str | list[int] | list[Message]:
        """What is sent for the next turn, `message` being its new user message."""
        if self.cal is not None:
            self.sent = self._template() + self._context() + self.count(message)
        if self.api == "chat":
            messages: list[Message] = [{"role": "system", "content": str(self.system)}] if self.system else []
            for user, answer in self.turns:
                messages += [{"role": "user", "content": str(user)}, {"role": "assistant", "content": str(answer)}]
            return [*messages, {"role": "user", "content": str(message)}]
        parts = ([self.system] if self.system else []) + [p for turn in self.turns for p in turn] + [message]
        if isinstance(message, list):
            return [t for p in parts for t in p]
        return " ".join(str(p) for p in parts)
