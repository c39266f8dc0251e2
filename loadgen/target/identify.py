"""Before a run: which server family answers, and which model it serves, where the endpoint file does not say.

Detected where the server says it, never assumed in silence:
- the family from a route only that family serves: llama.cpp's `GET /props` (ggml-org/llama.cpp
  tools/server/README.md), TGI's `GET /info` (its `router`; huggingface/text-generation-inference docs,
  "Info"), SGLang's `GET /get_server_info` (sgl-project/sglang python/sglang/srt/entrypoints/http_server.py)
  and vLLM's `GET /version` (vllm/entrypoints/openai/api_server.py); then from `/v1/models`'s `owned_by`
  (llama.cpp: "llamacpp", vLLM: "vllm", loadgen's emulator: "loadgen"). Where none says, vLLM's request options
  are assumed and the run's note says so.
- the model from `GET /v1/models`: the one model it lists; several: the run fails with the list.
- what bounds a llama.cpp server's concurrency, where its `GET /props` says: `total_slots`, and the context of a
  slot (`default_generation_settings.n_ctx`); and, from the model file its `model_path` names (target/gguf.py),
  whether it prefills a prompt's last tokens apart. `loadgen calibrate` reads them from the run's stored endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from loadgen.spec.redact import redact_url
from loadgen.target import gguf
from loadgen.target.check import models, v1_hint
from loadgen.target.probe import CALL_FAILED, Endpoint, call

ASSUMED_SERVER = "vllm"

# (family, route at the server's root, a key only that family's answer has)
ROUTES = (
    ("llamacpp", "/props", "default_generation_settings"),
    ("tgi", "/info", "router"),
    ("sglang", "/get_server_info", "tokenizer_path"),
    ("vllm", "/version", "version"),
)
OWNERS = {"llamacpp": "llamacpp", "vllm": "vllm", "sglang": "sglang", "loadgen": "emulator"}


class Unidentified(Exception):
    """The model cannot be settled without the user (none or several listed); the message says what to set."""


@dataclass
class Identity:
    server: str
    model: str
    detected: dict[str, str] = field(default_factory=dict)  # what was detected, and from where
    notes: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)  # slots, ctx_per_slot, prompt_tail: where the server says


def llamacpp_limits(props: object) -> dict[str, int]:
    """A llama.cpp server's slots and per-slot context, as its GET /props answer says them (none it does not)."""
    if not isinstance(props, dict):
        return {}
    settings = props.get("default_generation_settings")
    found = {
        "slots": props.get("total_slots"),
        "ctx_per_slot": settings.get("n_ctx") if isinstance(settings, dict) else None,
    }
    return {k: v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}


def model_prompt_tail(props: object) -> tuple[int, str] | None:
    """(the prompt tokens a llama.cpp server prefills in a step of their own, where that was read), from the
    model file its GET /props names (`model_path`), where this machine can read it (a loopback server's)."""
    path = props.get("model_path") if isinstance(props, dict) else None
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    try:
        tail, why = gguf.prompt_tail(Path(path))
    except (OSError, ValueError, gguf.NotGGUF):
        return None
    return tail, f"GET /props model_path: {why}"


def _get_json(ep: Endpoint, url_path: str, root: bool = False) -> object:
    base = ep.base_url.rstrip("/")
    target = ep.model_copy(update={"base_url": base.removesuffix("/v1")}) if root else ep
    try:
        code, body = call(target, url_path)
        return orjson.loads(body) if code == 200 else None
    except (*CALL_FAILED, orjson.JSONDecodeError):
        return None


def detect_server(ep: Endpoint, cards: list[dict]) -> tuple[str, str, object] | None:
    """(family, how it was told, the route's answer where a route told it) where the server says which it is."""
    for family, route, key in ROUTES:
        answer = _get_json(ep, route, root=True)
        if isinstance(answer, dict) and key in answer:
            return family, f"GET {route}", answer
    owners = {OWNERS.get(str(c.get("owned_by"))) for c in cards} - {None}
    if len(owners) == 1:
        (family,) = owners
        return str(family), "GET /v1/models owned_by", None
    return None


def identify(ep: Endpoint, server: str | None, model: str | None) -> Identity:
    """The family and model this run speaks to: as given, else detected. Raises Unidentified when no model is
    named and the server lists none, or several."""
    code, cards = models(ep) if model is None or server is None else (200, [])
    detected: dict[str, str] = {}
    notes: list[str] = []
    answer: object = None  # the family's route's answer, where it told the family
    if server is None:
        found = detect_server(ep, cards)
        if found is None:
            server = ASSUMED_SERVER
            notes.append(f"the server did not say which it is: {ASSUMED_SERVER}'s request options were assumed")
            detected["server"] = "assumed"
        else:
            server, detected["server"], answer = found
    if model is None:
        ids = [str(c["id"]) for c in cards]
        if not ids:
            answered = "lists none" if code == 200 else f"answered HTTP {code}{v1_hint(ep)}"
            raise Unidentified(
                f"the endpoint names no model and GET {redact_url(ep.base_url.rstrip('/'))}/models {answered}: "
                "set model: in the endpoint or workload"
            )
        if len(ids) > 1:
            raise Unidentified(
                f"the endpoint names no model and the server serves several: {', '.join(ids)}; "
                "set model: in the endpoint or workload, or --set model=NAME"
            )
        model, detected["model"] = ids[0], "GET /v1/models"
    limits: dict[str, int] = {}
    if server == "llamacpp":  # /props once: its answer told the family, or it is asked now
        props = answer if answer is not None else _get_json(ep, "/props", root=True)
        limits = llamacpp_limits(props)
        if limits:
            detected["limits"] = "GET /props"
        if (tail := model_prompt_tail(props)) is not None:
            limits["prompt_tail"], detected["prompt_tail"] = tail
    return Identity(server=server, model=model, detected=detected, notes=notes, limits=limits)
