"""A model's thinking written inline in the answer's text, between tags (`<think>` and `</think>` for
DeepSeek-R1 and Qwen3), where the server has no reasoning parser to send it apart (vLLM without
--reasoning-parser, llama.cpp with --reasoning-format none). The workload names the tags
(`requests.think_tags`); an empty opening tag means the thinking starts with the output, as where the chat
template writes the opening tag into the prompt."""

from __future__ import annotations


class InlineThinking:
    """Splits a stream's text, chunk by chunk, into thinking and answer; a tag split across chunks is held back
    until it is whole."""

    def __init__(self, open_tag: str, close_tag: str):
        self.open_tag, self.close_tag = open_tag, close_tag
        self.state = "thinking" if not open_tag else "before"  # before | thinking | answer
        self.held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(thinking, answer) text of this chunk."""
        s, self.held = self.held + text, ""
        thought: list[str] = []
        answer: list[str] = []
        while s:
            if self.state == "answer":
                answer.append(s)
                break
            if self.state == "before":
                body = s.lstrip()
                if not body or (len(body) < len(self.open_tag) and self.open_tag.startswith(body)):
                    # whitespace, or the tag's start: wait for the rest
                    self.held = s
                    break
                if body.startswith(self.open_tag):
                    self.state, s = "thinking", body[len(self.open_tag) :]
                else:  # the model answers without thinking
                    self.state = "answer"
                continue
            i = s.find(self.close_tag)
            if i >= 0:
                thought.append(s[:i])
                self.state, s = "answer", s[i + len(self.close_tag) :]
                continue
            keep = _partial(s, self.close_tag)
            thought.append(s[: len(s) - keep])
            self.held = s[len(s) - keep :]
            break
        return "".join(thought), "".join(answer)


def _partial(s: str, tag: str) -> int:
    """How many of `s`'s last characters begin `tag` (a tag that may finish in the next chunk)."""
    for n in range(min(len(tag) - 1, len(s)), 0, -1):
        if tag.startswith(s[-n:]):
            return n
    return 0
