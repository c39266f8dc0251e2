"""Before a run: is this the endpoint the workload means? Reachable, serving the model, answering a real request.

A wrong base URL (no `/v1`) or a model the server does not serve would otherwise fail every request of the run;
here it is one line that says what the server answered and the likely fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import orjson

from loadgen.client.openai import error_message
from loadgen.spec.redact import redact_url
from loadgen.target.bodies import PATHS
from loadgen.target.probe import CALL_FAILED, Endpoint, call


class WrongEndpoint(Exception):
    """The endpoint cannot serve this run; the message is one line with what it answered and the likely fix."""


def _call(ep: Endpoint, path: str, api: str | None = None) -> tuple[int, bytes]:
    try:
        return call(ep, path, api, "hello")
    except CALL_FAILED as e:
        reason = getattr(e, "reason", e)
        raise WrongEndpoint(f"cannot reach the endpoint at {redact_url(ep.base_url)}: {reason}") from None


def v1_hint(ep: Endpoint) -> str:
    base = ep.base_url.rstrip("/")
    if urlsplit(base).path.endswith("/v1"):
        return ""
    return f" (did you mean {redact_url(base)}/v1?)"


def models(ep: Endpoint) -> tuple[int, list[dict]]:
    """The status of `GET /models` and the model cards it lists (none where it lists none, or is not an OpenAI
    model list: the real request decides). A refused API key or an unreachable endpoint raises WrongEndpoint."""
    code, body = _call(ep, "/models")
    if code in (401, 403):
        raise WrongEndpoint(f"GET /models answered HTTP {code} ({error_message(body)}): the server refused the API key")
    try:
        data = orjson.loads(body).get("data") if code == 200 else None
    except (orjson.JSONDecodeError, AttributeError):
        data = None
    return code, [m for m in data if isinstance(m, dict) and "id" in m] if isinstance(data, list) else []


def check_endpoint(ep: Endpoint, apis: Sequence[str]) -> None:
    """Raise WrongEndpoint unless one real, one-token request on every api the run uses is answered. When it is
    refused, the line says why as well as the server can tell: the models it lists, or the path's /v1."""
    listed = [str(m["id"]) for m in models(ep)[1]]
    for api in apis:
        code, body = _call(ep, PATHS[api], api)
        if not 400 <= code < 500 or code == 429:
            continue  # answered (servers such as llama.cpp's take any model name), or busy: the run will tell
        if listed and ep.model not in listed:
            served = ", ".join(listed[:5]) + (", ..." if len(listed) > 5 else "")
            raise WrongEndpoint(
                f"the server does not serve model {ep.model!r}; it serves {served} (HTTP {code}: "
                f"{error_message(body)}; set model: in the workload or endpoint, or --set model={listed[0]})"
            )
        hint = v1_hint(ep) if code in (404, 405) else ""
        raise WrongEndpoint(f"POST {PATHS[api]} answered HTTP {code}: {error_message(body)}{hint}")
