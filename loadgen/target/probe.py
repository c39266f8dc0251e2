"""Probing an endpoint before a run: does it take token-ID prompts, and how many tokens is a prompt word?

Both are a few tiny non-streaming requests; none of them lands in the results.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

import orjson

from loadgen.client.openai import PATHS
from loadgen.client.prompts import make_prompt

PROBE_WORDS = (64, 512)
TOLERANCE = 0.01


def _post(base_url: str, headers: dict[str, str], api: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        base_url.rstrip("/") + PATHS[api],
        data=orjson.dumps(body),
        method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, {}
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError):
        return 0, {}  # the run itself will report what is wrong


def token_prompts_refused(base_url: str, headers: dict[str, str], model: str) -> str | None:
    """Whether the server refuses token-ID prompts but takes text (llama.cpp's OpenAI servers do: 422 or 500).
    Returns the refusal's HTTP status, or None."""
    code, _ = _post(
        base_url, headers, "completions", {"model": model, "prompt": [1000, 1001, 1002, 1003], "max_tokens": 1}
    )
    if code < 400 or code == 429:
        return None
    ok, _ = _post(base_url, headers, "completions", {"model": model, "prompt": "hello world", "max_tokens": 1})
    return f"HTTP {code}" if ok == 200 else None


@dataclass(frozen=True)
class TextCalibration:
    """The server's prompt tokens for a text prompt of w words: overhead + per_word x w (from usage)."""

    overhead: float
    per_word: float

    def words(self, tokens: int) -> int:
        return max(1, round((tokens - self.overhead) / self.per_word))


def _prompt_tokens(base_url: str, headers: dict[str, str], model: str, api: str, words: int) -> int | None:
    text = make_prompt(words, -words, 0)
    body: dict = {"model": model, "max_tokens": 1}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    code, out = _post(base_url, headers, api, body)
    usage = out.get("usage") if isinstance(out, dict) else None
    n = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return n if code == 200 and isinstance(n, int) else None


def calibrate_text(base_url: str, headers: dict[str, str], model: str, api: str) -> TextCalibration | None:
    """Fit tokens = overhead + per_word x words from two probes, then check a third within 1% (refitting once
    through all three if not). None when the server reports no prompt tokens."""
    points = [(w, _prompt_tokens(base_url, headers, model, api, w)) for w in PROBE_WORDS]
    if any(n is None for _, n in points):
        return None
    (w1, n1), (w2, n2) = points
    per_word = (n2 - n1) / (w2 - w1)
    if per_word <= 0:
        return None
    cal = TextCalibration(n1 - per_word * w1, per_word)
    target = 256
    words = cal.words(target)
    got = _prompt_tokens(base_url, headers, model, api, words)
    if got is None or abs(got / target - 1) <= TOLERANCE:
        return cal
    xs = [w1, w2, words]
    ys = [n1, n2, got]
    mx, my = sum(xs) / 3, sum(ys) / 3
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return TextCalibration(my - slope * mx, slope) if slope > 0 else cal
