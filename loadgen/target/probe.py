"""The pre-run step: probe the endpoint (does it take token-ID prompts? how many tokens is a prompt word, and a
chat message's template?) and settle how this run's prompts are made, as plain immutable data (`PromptSetup`).

The probes are a few tiny non-streaming requests, built like the run's own; none of them lands in the results.
Prompt words are drawn evenly from prompts.WORDS, so a prompt's tokens a word is, on average, the vocabulary's:
one probe holds every word once, so the fit takes that average exactly, whatever the tokenizer, from two short
probes. On a CPU engine a probe's prefill is most of a chat run's start (a chat template ends each prompt, so a
longer probe is no extension of a shorter one: llama.cpp prefilled each whole, 0.2-1.1 s for 32-256 tokens).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Sequence

import orjson
from pydantic import BaseModel, ConfigDict

from loadgen.spec.workload import StageSpec
from loadgen.target.bodies import PATHS, Message, request_body
from loadgen.target.prompts import WORDS, make_prompt

LEAD_WORDS = 1  # the first probe: one word; the second: the same and then every word of the vocabulary once
CHECK_TOKENS = 128  # the third probe, drawn as a run's prompts are
TOLERANCE = 0.01
# A chat conversation as a session's turn sends it: a system message, then user and assistant in turn.
PROBE_ROLES = ("system", "user", "assistant", "user", "assistant", "user")
PROBE_MESSAGE_WORDS = 16


class Endpoint(BaseModel):
    """Where the probes go and how they are built."""

    model_config = ConfigDict(frozen=True)
    base_url: str
    headers: dict[str, str]
    server: str
    model: str


# What `call` raises where the endpoint cannot be reached or breaks off its answer (urllib's URLError is an
# OSError; http.client's IncompleteRead, a body cut short, is not).
CALL_FAILED = (OSError, http.client.HTTPException)


def call(
    ep: Endpoint, path: str, api: str | None = None, prompt: str | list[int] | list[Message] = ""
) -> tuple[int, bytes]:
    """GET `path`, or with `api`, POST a one-token, non-streaming request as the run builds them; the status and
    body of the answer, an HTTP error's included; raises CALL_FAILED."""
    data = None if api is None else request_body(api, ep.server, ep.model, prompt, 1, stream=False)
    headers = ep.headers if data is None else {**ep.headers, "Content-Type": "application/json"}
    req = urllib.request.Request(ep.base_url.rstrip("/") + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(ep: Endpoint, api: str, prompt: str | list[int] | list[Message]) -> tuple[int, dict]:
    try:
        code, body = call(ep, PATHS[api], api, prompt)
        return code, orjson.loads(body) if code == 200 else {}
    except (*CALL_FAILED, orjson.JSONDecodeError):
        return 0, {}  # the run itself will report what is wrong


def token_prompts_refused(ep: Endpoint) -> str | None:
    """Whether the server refuses token-ID prompts but takes text (llama-cpp-python's server did: 422).
    Returns the refusal's HTTP status, or None."""
    code, _ = _post(ep, "completions", [1000, 1001, 1002, 1003])
    if code < 400 or code == 429:
        return None
    ok, _ = _post(ep, "completions", "hello world")
    return f"HTTP {code}" if ok == 200 else None


class TextCalibration(BaseModel):
    """The server's prompt tokens for a text prompt of w words: overhead + per_word x w (from usage); a chat
    conversation of m messages, w words in all: overhead + per_message x (m - 1) + per_word x w, the chat
    template's tokens around each message (its role, its delimiters) being per_message."""

    model_config = ConfigDict(frozen=True)
    overhead: float  # a one-message prompt's tokens beyond its words (the template's, a start-of-sequence token)
    per_word: float
    per_message: float = 0.0  # each further message's template tokens (0 for completions: one text)

    def words(self, tokens: int) -> int:
        return max(1, round((tokens - self.overhead) / self.per_word))

    def part_words(self, tokens: int) -> int:
        """Words for a message of a conversation `tokens` long as the server counts it, its template included."""
        return max(1, round((tokens - self.per_message) / self.per_word))

    def template(self, messages: int) -> float:
        """The tokens a prompt of `messages` messages counts beyond their content."""
        return self.overhead + self.per_message * (messages - 1)


def _usage(ep: Endpoint, api: str, prompt: str | list[int] | list[Message]) -> int | None:
    code, out = _post(ep, api, prompt)
    usage = out.get("usage") if isinstance(out, dict) else None
    n = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return n if code == 200 and isinstance(n, int) else None


def calibrate_text(ep: Endpoint, api: str) -> TextCalibration | None:
    """Fit tokens = overhead + per_word x words from two probes (a lead, then the lead and the vocabulary), then
    check a third within 1% (refitting once through all three if not). None when the server reports no prompt
    tokens."""
    lead = str(make_prompt(LEAD_WORDS, "probe", 0))
    w1, n1 = LEAD_WORDS, _usage(ep, api, lead)
    w2, n2 = LEAD_WORDS + len(WORDS), _usage(ep, api, " ".join([lead, *WORDS]))
    if n1 is None or n2 is None:
        return None
    per_word = (n2 - n1) / (w2 - w1)
    if per_word <= 0:
        return None
    cal = TextCalibration(overhead=n1 - per_word * w1, per_word=per_word)
    words = cal.words(CHECK_TOKENS)
    got = _usage(ep, api, make_prompt(words, "probe", 0))  # the lead's stream of words
    if got is None or abs(got / CHECK_TOKENS - 1) <= TOLERANCE:
        return cal
    xs = [w1, w2, words]
    ys = [n1, n2, got]
    mx, my = sum(xs) / 3, sum(ys) / 3
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return TextCalibration(overhead=my - slope * mx, per_word=slope) if slope > 0 else cal


def calibrate_messages(ep: Endpoint, cal: TextCalibration) -> TextCalibration:
    """`cal` with the chat template's tokens per further message, from one probe: a conversation of six messages
    (system, then user and assistant in turn), whose count beyond its words and a one-message prompt's overhead
    is five messages' templates. Unchanged if the probe gets no count."""
    messages: list[Message] = [
        {"role": role, "content": str(make_prompt(PROBE_MESSAGE_WORDS, f"probe:{i}", 0))}
        for i, role in enumerate(PROBE_ROLES)
    ]
    n = _usage(ep, "chat", messages)
    if n is None:
        return cal
    extra = n - cal.overhead - cal.per_word * PROBE_MESSAGE_WORDS * len(PROBE_ROLES)
    return cal.model_copy(update={"per_message": max(0.0, extra / (len(PROBE_ROLES) - 1))})


class PromptSetup(BaseModel):
    """How this run makes prompts on this endpoint, and what the probes found (for the run's note)."""

    model_config = ConfigDict(frozen=True)
    text_only: bool = False  # the server refuses token-ID prompts: every stage sends text
    calibration: dict[str, TextCalibration] = {}  # per api: how many words make a token count
    notes: tuple[str, ...] = ()


def prepare(ep: Endpoint, stages: Sequence[StageSpec]) -> PromptSetup:
    """Probe the endpoint: token-ID prompts accepted? Text calibrated for every api sending untokenized text."""
    text_only = False
    notes: list[str] = []
    if any(not s.text_prompts for s in stages):
        refused = token_prompts_refused(ep)
        if refused is not None:
            text_only = True
            notes.append(f"the server refused token-ID prompts ({refused}): text prompts were sent instead")
    calibration: dict[str, TextCalibration] = {}
    untokenized = [s for s in stages if not s.requests.tokenizer and (s.text_prompts or text_only)]
    for api in sorted({s.api for s in untokenized}):
        cal = calibrate_text(ep, api)
        if cal is None:
            notes.append(f"{api}: the server reports no prompt tokens, so text prompts are one word a token")
            continue
        conversing = [s for s in untokenized if s.api == "chat" and (s.sessions is not None or s.tasks is not None)]
        if conversing:  # only conversations (sessions, agent tasks) have further messages
            cal = calibrate_messages(ep, cal)
        calibration[api] = cal
        if (cal.overhead, cal.per_word, cal.per_message) != (0.0, 1.0, 0.0):
            each = f", + {cal.per_message:.0f} each further message" if cal.per_message else ""
            notes.append(
                f"{api} prompts calibrated on the server: {cal.per_word:.3f} tokens a word + {cal.overhead:.0f}{each}"
            )
    return PromptSetup(text_only=text_only, calibration=calibration, notes=tuple(notes))
