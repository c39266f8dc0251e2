"""Streaming one request over HTTP/1.1 (geventhttpclient) and stamping every SSE event as it arrives."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPSocketPoolResponse
from geventhttpclient.url import URL

from loadgen.client.openai import read_chunk
from loadgen.client.sse import SSEParser
from loadgen.results import RequestResult

ERROR_BODY_LIMIT = 2048


class StreamBroken(Exception):
    """The connection closed before the HTTP message was complete."""


def read_some(resp: HTTPSocketPoolResponse) -> bytes:
    """Return whatever body bytes have arrived, waiting only when none have; b"" at the end of the message.

    geventhttpclient's own read(n) waits for n bytes and iter_lines() buffers about 1 KB, both of which delay
    events and would inflate TTFT, so this reads the socket once per call and takes the parsed body buffer.
    """
    buf = resp._body_buffer
    while not buf:
        if resp.message_complete:
            return b""
        sock = resp._sock
        if sock is None:
            raise StreamBroken("connection closed")
        data = sock.recv(resp.block_size)
        resp.feed(data)  # b"" tells the HTTP parser the peer closed; a close-delimited body then completes
        if not data and not resp.message_complete:
            raise StreamBroken("connection closed before the response was complete")
    out = bytes(buf)
    del buf[:]
    return out


def _status_class(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


class StreamClient:
    """One keep-alive connection to an OpenAI-compatible base URL (one per load-generating user)."""

    def __init__(self, base_url: str, headers: dict[str, str], connect_s: float, idle_s: float):
        url = URL(base_url)
        self.prefix = url.path.rstrip("/")
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",  # compressed SSE would be held back by the decompressor
            **headers,
        }
        self.http = HTTPClient.from_url(
            url, concurrency=1, connection_timeout=connect_s, network_timeout=idle_s, headers=self.headers
        )

    def close(self) -> None:
        self.http.close()

    def stream(
        self, r: RequestResult, path: str, body: bytes, t0: float, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        """Send `body` to `path`, filling `r` with timestamps (run clock: seconds since t0), counts and status."""
        resp: HTTPSocketPoolResponse | None = None
        r.sent_s = clock() - t0
        try:
            resp = self.http.request("POST", self.prefix + path, body=body, headers=self.headers)
            r.http_status = resp.status_code
            if resp.status_code != 200:
                detail = resp.read(ERROR_BODY_LIMIT) if not resp.message_complete else bytes(resp._body_buffer)
                r.end_s = clock() - t0
                self._fail(r, _status_class(resp.status_code), detail.decode("utf-8", "replace")[:300])
                return
            ctype = resp.get("content-type") or ""
            if "text/event-stream" not in ctype:
                r.end_s = clock() - t0
                self._fail(r, "malformed", f"expected a text/event-stream response, got {ctype or 'no content type'}")
                return
            self._read_events(r, resp, t0, clock)
        except gevent.GreenletExit:
            r.end_s = clock() - t0
            self._fail(r, "interrupted", "the run stopped while this request was in flight", status="interrupted")
            raise
        except (TimeoutError, gevent.Timeout):
            r.end_s = clock() - t0
            self._fail(r, "timeout", "no bytes within the idle timeout" if r.http_status else "connect timeout")
        except StreamBroken as e:
            r.end_s = clock() - t0
            self._fail(r, "stream_broken", str(e))
        except OSError as e:  # refused, reset, unreachable
            r.end_s = clock() - t0
            kind = "connect" if r.http_status is None else "stream_broken"
            self._fail(r, kind, f"{type(e).__name__}: {e}"[:300])
        except Exception as e:  # the HTTP parser rejects what the server sent
            r.end_s = clock() - t0
            self._fail(r, "malformed", f"{type(e).__name__}: {e}"[:300])
        finally:
            if resp is not None:
                resp.release()

    @staticmethod
    def _fail(r: RequestResult, error: str, detail: str, status: str = "error") -> None:
        r.status, r.error, r.error_detail = status, error, detail

    def _read_events(
        self, r: RequestResult, resp: HTTPSocketPoolResponse, t0: float, clock: Callable[[], float]
    ) -> None:
        parser = SSEParser()
        times, tokens = r.event_times, r.event_tokens
        done = False
        while True:
            chunk = read_some(resp)
            now = clock() - t0  # every event completed by this read arrived now
            payloads = parser.feed(chunk) if chunk else parser.close()
            for payload in payloads:
                c = read_chunk(payload)
                if c.error is not None:
                    r.end_s = now
                    self._fail(r, "malformed" if "server error" not in c.error else "stream_error", c.error)
                    return
                if c.done:
                    done = True
                    continue
                if c.chars:
                    times.append(now)
                    tokens.append(1)
                if c.completion_tokens is not None:
                    r.usage_completion_tokens = c.completion_tokens
                if c.prompt_tokens is not None:
                    r.server_prompt_tokens = c.prompt_tokens
            if not chunk:
                r.end_s = now
                break
        if not done:
            self._fail(r, "stream_broken", "the stream ended without data: [DONE]")
