"""Serving an aiohttp app for a run, as the emulator and the prefill/decode pair do."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web


def app_runner(app: web.Application, shutdown_timeout: float = 1.0) -> web.AppRunner:
    """The runner every loadgen server uses. A client that closes its stream cancels its handler at once (not
    at the handler's next write), so that an abandoned request frees its place as a real server's does."""
    return web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout, handler_cancellation=True)


async def serve_app(app: web.Application, host: str, port: int, what: str) -> None:
    """Serve `app` until SIGINT or SIGTERM; once it listens, prints one line: `what`, then `serving <base URL>`.
    Streams in flight are not waited for at shutdown: the clients are load generators."""
    runner = app_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"{what} serving http://{host}:{bound}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
