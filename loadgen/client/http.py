"""Streaming one request over an HTTP/1.1 keep-alive connection and stamping every SSE event as it arrives.

Requests are written by this module on its own connection, so that `sent_s` is stamped immediately before the
bytes go out (a pooled client checks and queues connections first, which under load delayed the send by
milliseconds after the stamp). Responses are parsed by geventhttpclient's C HTTP parser.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import gevent
import gevent.socket
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketResponse

from loadgen.client import stamps
from loadgen.client.openai import read_chunk
from loadgen.client.sse import SSEParser
from loadgen.client.stamps import ReadDelays
from loadgen.results import RequestResult
from loadgen.spec.workload import TimeoutSpec

Recv = Callable[[socket.socket, int], tuple[bytes, float, float]]


class StreamBroken(Exception):
    """The connection closed before the HTTP message was complete."""


class FirstTokenTimeout(Exception):
    pass


class TotalTimeout(Exception):
    pass


ERROR_BODY_LIMIT = 2048
BLOCK_SIZE = 65536


def read_some(resp: HTTPSocketResponse, recv: Recv, buffered: tuple[float, float]) -> tuple[bytes, float, float]:
    """Return the body bytes that have arrived, when the last of them arrived and when they were read, waiting
    only when none have; b"" at the end of the message. `buffered` stamps bytes already in the parser's buffer.

    geventhttpclient's own read(n) waits for n bytes and iter_lines() buffers about 1 KB, both of which delay
    events and would inflate TTFT, so this reads the socket once per call and takes the parsed body buffer.
    """
    buf = resp._body_buffer
    stamp, read_at = buffered
    while not buf:
        if resp.message_complete:
            now = time.perf_counter()
            return b"", now, now
        sock = resp._sock
        if sock is None:
            raise StreamBroken("connection closed")
        data, stamp, read_at = recv(sock, resp.block_size)
        if data:
            resp.feed(data)
            continue
        try:
            resp.feed(b"")  # tells the HTTP parser the peer closed: a close-delimited body then completes
        except HTTPParseError:
            pass
        if not resp.message_complete:
            raise StreamBroken("connection closed before the response was complete")
    out = bytes(buf)
    del buf[:]
    return out, stamp, read_at


def _status_class(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


class StreamClient:
    """One keep-alive connection to an OpenAI-compatible base URL (one per load-generating user)."""

    def __init__(self, base_url: str, headers: dict[str, str], timeouts: TimeoutSpec, delays: ReadDelays):
        url = urlsplit(base_url)
        self.tls = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.tls else 80)
        self.prefix = url.path.rstrip("/")
        self.timeouts = timeouts
        host_header = self.host if url.port is None else f"{self.host}:{url.port}"
        fixed = {
            "Host": host_header,
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",  # compressed SSE would be held back by the decompressor
            "Connection": "keep-alive",
            **headers,
        }
        self.header_lines = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self.sock: socket.socket | None = None
        self.recv: Recv = stamps.recv_clocked
        self.delays = delays
        self.buffered = (0.0, 0.0)  # when the response's first bytes arrived, and when they were read
        self.first: gevent.Timeout | None = None  # the first-token timeout of the request in flight

    def connect(self) -> None:
        """Open the connection ahead of the first request, so that no TTFT pays for a handshake that later
        requests do not; a failure here is left for the first request to report."""
        try:
            self._open()
        except OSError:
            self.sock = None

    def _open(self) -> socket.socket:
        sock = gevent.socket.create_connection((self.host, self.port), timeout=self.timeouts.connect_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            self.recv = stamps.recv_clocked  # TLS sockets have no recvmsg: stamp on the clock when data is read
        else:
            self.recv = stamps.recv_stamped if stamps.enable(sock) else stamps.recv_clocked
        sock.settimeout(self.timeouts.idle_s)
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _send(self, r: RequestResult, path: str, body: bytes, t0: float) -> HTTPSocketResponse:
        head = f"POST {self.prefix}{path} HTTP/1.1\r\n{self.header_lines}Content-Length: {len(body)}\r\n\r\n"
        data = head.encode("latin-1") + body
        reused = self.sock is not None
        sock = self.sock if self.sock is not None else self._open()
        try:
            return self._exchange(sock, data, r, t0)
        except (HTTPConnectionClosed, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        # The server closed the idle keep-alive connection before reading this request: send it again, once.
        self.close()
        return self._exchange(self._open(), data, r, t0)

    def _exchange(self, sock: socket.socket, data: bytes, r: RequestResult, t0: float) -> HTTPSocketResponse:
        r.sent_s = time.perf_counter() - t0
        sock.sendall(data)
        # Read the first bytes here rather than in the parser, so that body bytes arriving with the headers
        # (a server that sends everything at once) keep their receive stamp too.
        first, arrived, read_at = self.recv(sock, BLOCK_SIZE)
        self.buffered = (arrived, read_at)
        return HTTPSocketResponse(sock, block_size=BLOCK_SIZE, method="POST", pre_buffered=first)

    def stream(self, r: RequestResult, path: str, body: bytes, t0: float) -> None:
        """Send `body` to `path`, filling `r` with timestamps (run clock: seconds since t0), counts and status."""
        resp: HTTPSocketResponse | None = None
        t = self.timeouts
        total = gevent.Timeout(t.total_s, TotalTimeout) if t.total_s else None
        self.first = gevent.Timeout(t.first_token_s, FirstTokenTimeout) if t.first_token_s else None
        try:
            if total is not None:
                total.start()
            if self.first is not None:
                self.first.start()
            resp = self._send(r, path, body, t0)
            r.http_status = resp.status_code
            if resp.status_code != 200:
                retry_after = resp.get("retry-after")
                if isinstance(retry_after, str) and retry_after.strip().replace(".", "", 1).isdigit():
                    r.retry_after_s = float(retry_after)
                detail = resp.read(ERROR_BODY_LIMIT)
                r.end_s = time.perf_counter() - t0
                self._fail(r, _status_class(resp.status_code), detail.decode("utf-8", "replace")[:300])
                return
            ctype = str(resp.get("content-type") or "")
            if "text/event-stream" not in ctype:
                r.end_s = time.perf_counter() - t0
                self._fail(r, "malformed", f"expected a text/event-stream response, got {ctype or 'no content type'}")
                return
            self._read_events(r, resp, t0)
        except gevent.GreenletExit:
            r.end_s = time.perf_counter() - t0
            self._fail(r, "interrupted", "the run stopped while this request was in flight", status="interrupted")
            raise
        except FirstTokenTimeout:
            r.end_s = time.perf_counter() - t0
            self._fail(r, "timeout", f"no output within the first-token timeout ({t.first_token_s:g} s)")
        except TotalTimeout:
            r.end_s = time.perf_counter() - t0
            self._fail(r, "timeout", f"the request outran the total timeout ({t.total_s:g} s)")
        except TimeoutError:
            r.end_s = time.perf_counter() - t0
            self._fail(
                r,
                "timeout",
                f"no bytes for {t.idle_s:g} s (idle timeout)"
                if r.http_status
                else f"no response within {t.idle_s:g} s",
            )
        except StreamBroken as e:
            r.end_s = time.perf_counter() - t0
            self._fail(r, "stream_broken", str(e))
        except OSError as e:  # refused, reset, unreachable
            r.end_s = time.perf_counter() - t0
            kind = "connect" if r.http_status is None and self.sock is None else "stream_broken"
            self._fail(r, kind, f"{type(e).__name__}: {e}"[:300])
        except Exception as e:  # the HTTP parser rejects what the server sent
            r.end_s = time.perf_counter() - t0
            self._fail(r, "malformed", f"{type(e).__name__}: {e}"[:300])
        finally:
            for timer in (total, self.first):
                if timer is not None:
                    timer.close()
            # Keep the connection only after a complete response that allows keep-alive.
            if resp is None or not resp.message_complete or resp.should_close() or r.status != "ok":
                self.close()

    @staticmethod
    def _fail(r: RequestResult, error: str, detail: str, status: str = "error") -> None:
        r.status, r.error, r.error_detail = status, error, detail

    def _read_events(self, r: RequestResult, resp: HTTPSocketResponse, t0: float) -> None:
        parser = SSEParser()
        times, tokens = r.event_times, r.event_tokens
        done = False
        kernel = self.recv is stamps.recv_stamped
        buffered = self.buffered
        while True:
            chunk, arrived, read_at = read_some(resp, self.recv, buffered)
            buffered = (read_at, read_at)  # bytes left in the parser's buffer after a read are read-time only
            now = arrived - t0  # every event completed by this read arrived then
            payloads = parser.feed(chunk) if chunk else parser.close()
            had = len(times)
            for payload in payloads:
                c = read_chunk(payload)
                if c.error is not None:
                    r.end_s = now
                    self._fail(r, "malformed" if "server error" not in c.error else "stream_error", c.error)
                    return
                if c.done:
                    done = True
                    continue
                if c.text:
                    if r.text_parts is not None:
                        r.text_parts.append(c.text)
                    if not times and self.first is not None:
                        self.first.close()  # the first token came in time
                    times.append(now)
                    tokens.append(1)
                if c.completion_tokens is not None:
                    r.usage_completion_tokens = c.completion_tokens
                if c.prompt_tokens is not None:
                    r.server_prompt_tokens = c.prompt_tokens
            if kernel:  # several output events in one late read may have arrived apart: bound that error
                self.delays.add(read_at - arrived if len(times) - had > 1 else 0.0)
            if not chunk:
                r.end_s = now
                break
        if not done:
            self._fail(r, "stream_broken", "the stream ended without data: [DONE]")
