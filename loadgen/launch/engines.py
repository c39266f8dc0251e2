"""What an endpoint file starts: the emulator, a llama.cpp engine or a prefill/decode pair of them."""

from __future__ import annotations

from loadgen.spec.endpoint import EndpointSpec, LlamaCppLaunch, LlamaCppPairLaunch


def serve(endpoint: EndpointSpec, host: str, port: int) -> None:
    """Serve the endpoint until SIGINT or SIGTERM; prints one line ending in `serving <base URL>` once it listens."""
    if isinstance(endpoint.launch, LlamaCppLaunch):
        from loadgen.launch.llamacpp import serve as serve_llamacpp

        serve_llamacpp(endpoint.name, endpoint.launch, host, port)
    elif isinstance(endpoint.launch, LlamaCppPairLaunch):
        from loadgen.launch.pair import serve as serve_pair

        serve_pair(endpoint.name, endpoint.launch, host, port)
    else:
        from loadgen.emulator.server import serve as serve_emulator

        serve_emulator(endpoint, host, port)
