"""A session's conversation as the server sees it, growing turn by turn.

Turn k+1's prompt is exactly turn k's prompt, then the answer the server returned to it, then the new message: a
chat conversation as its list of messages, a completions prompt as one text or one token-ID sequence. So the
server's prefix cache can hold everything up to the new message, as it would for a real chat or agent loop.
"""

from __future__ import annotations

from collections.abc import Callable

from loadgen.target.bodies import Message

Part = str | list[int]


class Conversation:
    def __init__(self, api: str, system: Part | None, encode: Callable[[str], list[int]] | None = None):
        self.api = api
        self.system = system
        self.encode = encode  # token-ID prompts: an answer's text into the IDs the next turn resends
        self.turns: list[tuple[Part, Part]] = []  # each earlier turn in context: its message and its answer

    def add(self, message: Part, answer: str | Part) -> None:
        """A turn is over: its message and answer stay in the context."""
        if self.encode is not None and isinstance(answer, str):
            answer = self.encode(answer)
        self.turns.append((message, answer))

    def drop(self, n: int) -> None:
        """The oldest n turns leave the context (it would not fit the model's otherwise)."""
        del self.turns[:n]

    def prompt(self, message: Part) -> str | list[int] | list[Message]:
        """What is sent for the next turn, `message` being its new user message."""
        if self.api == "chat":
            messages: list[Message] = [{"role": "system", "content": str(self.system)}] if self.system else []
            for user, answer in self.turns:
                messages += [{"role": "user", "content": str(user)}, {"role": "assistant", "content": str(answer)}]
            return [*messages, {"role": "user", "content": str(message)}]
        parts = ([self.system] if self.system else []) + [p for turn in self.turns for p in turn] + [message]
        if isinstance(message, list):
            return [t for p in parts for t in p]
        return " ".join(str(p) for p in parts)
