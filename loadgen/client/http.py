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
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

import gevent
import gevent.socket
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketResponse

from loadgen.client import stamps
from loadgen.client.openai import error_message, read_chunk
from loadgen.client.sse import SSEParser
from loadgen.client.stamps import Delays
from loadgen.client.thinking import InlineThinking
from loadgen.results import ErrorKind, RequestResult
from loadgen.schedule.cancel import Cancel
from loadgen.spec.workload import TimeoutSpec

Recv = Callable[[socket.socket, int], tuple[bytes, float, float]]


class StreamBroken(Exception):
    """The connection closed before the HTTP message was complete."""


class Abandoned(Exception):
    """The workload's point of abandon for this request came (schedule/cancel.py)."""


class Failed(Exception):
    """The request ended without a complete stream: its error class, a detail, and when (None: when caught)."""

    def __init__(self, kind: ErrorKind, detail: str, at_s: float | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.at_s = kind, detail, at_s


@dataclass(slots=True)
class _Received:
    """What the server sent back, gathered while the stream is read. Every field but `end_s` is the
    `RequestResult` field of the same name (Attempt.result copies them by name)."""

    text_parts: list[str] | None
    http_status: int | None = None
    retry_after_s: float | None = None
    event_times: list[float] = field(default_factory=list)
    event_tokens: list[int] = field(default_factory=list)
    reasoning_events: int = 0
    usage_completion_tokens: int | None = None
    usage_reasoning_tokens: int | None = None
    server_prompt_tokens: int | None = None
    cached_tokens: int | None = None
    server_prefill_ms: float | None = None
    server_decode_ms: float | None = None
    kv_handoff_ms: float | None = None
    kv_bytes: int | None = None
    end_s: float | None = None


_RECEIVED = tuple(f.name for f in fields(_Received) if f.name != "end_s")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One send of a planned request: what goes on the wire, and the labels its result carries."""

    request_id: int
    stage: str
    scheduled_s: float
    prompt_tokens: int
    max_tokens: int
    warmup: bool
    path: str
    body: bytes
    keep_text: bool = False  # keep the output text (a tokenizer will count it)
    think_tags: tuple[str, str] | None = None  # thinking inline in the text between these (client/thinking.py)
    cancel: Cancel | None = None  # where the workload abandons it (schedule/cancel.py)
    retries: int = 0

    def result(
        self, sent_s: float | None, end_s: float | None, got: _Received, failure: Failed | None, abandoned: bool
    ) -> RequestResult:
        if abandoned and self.cancel is not None:  # not an error: the client closed the stream, as planned
            status, error, detail = "cancelled", None, self.cancel.said(len(got.event_times))
        elif failure is not None:
            status = "interrupted" if failure.kind == "interrupted" else "error"
            error, detail = failure.kind, failure.detail
        else:
            status, error, detail = "ok", None, None
        return RequestResult(
            request_id=self.request_id,
            stage=self.stage,
            scheduled_s=self.scheduled_s,
            sent_s=self.scheduled_s if sent_s is None else sent_s,  # never sent (no connection): at its schedule
            prompt_tokens=self.prompt_tokens,
            max_tokens=self.max_tokens,
            warmup=self.warmup,
            end_s=end_s,
            status=status,
            error=error,
            error_detail=detail,
            retries=self.retries,
            **{name: getattr(got, name) for name in _RECEIVED},
        )


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


def _status_class(status: int) -> ErrorKind:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


class StreamClient:
    """One keep-alive connection to an OpenAI-compatible base URL (one per load-generating user)."""

    def __init__(self, base_url: str, headers: dict[str, str], timeouts: TimeoutSpec, delays: Delays):
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
        self.abandon: gevent.Timeout | None = None  # its abandon while no token has come (before_first_token)

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

    def _send(self, path: str, body: bytes, t0: float) -> tuple[HTTPSocketResponse, float]:
        """The response, and when the request went out (run clock)."""
        head = f"POST {self.prefix}{path} HTTP/1.1\r\n{self.header_lines}Content-Length: {len(body)}\r\n\r\n"
        data = head.encode("latin-1") + body
        reused = self.sock is not None
        sock = self.sock if self.sock is not None else self._open()
        try:
            return self._exchange(sock, data, t0)
        except (HTTPConnectionClosed, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        # The server closed the idle keep-alive connection before reading this request: send it again, once.
        self.close()
        return self._exchange(self._open(), data, t0)

    def _exchange(self, sock: socket.socket, data: bytes, t0: float) -> tuple[HTTPSocketResponse, float]:
        sent_s = time.perf_counter() - t0
        sock.sendall(data)
        # Read the first bytes here rather than in the parser, so that body bytes arriving with the headers
        # (a server that sends everything at once) keep their receive stamp too.
        first, arrived, read_at = self.recv(sock, BLOCK_SIZE)
        self.buffered = (arrived, read_at)
        return HTTPSocketResponse(sock, block_size=BLOCK_SIZE, method="POST", pre_buffered=first), sent_s

    def stream(self, a: Attempt, t0: float) -> RequestResult:
        """Send the attempt and read its stream: its result, with every timestamp on the run clock (seconds since
        t0) set once. An interrupted request (the greenlet killed) comes back with status `interrupted`; the
        caller records it and ends its greenlet."""
        resp: HTTPSocketResponse | None = None
        t = self.timeouts
        total = gevent.Timeout(t.total_s, TotalTimeout) if t.total_s else None
        self.first = gevent.Timeout(t.first_token_s, FirstTokenTimeout) if t.first_token_s else None
        cancel = a.cancel
        abandon = gevent.Timeout(cancel.after_s, Abandoned) if cancel and cancel.after_s is not None else None
        self.abandon = abandon if cancel and cancel.before_first_token else None
        got = _Received(text_parts=[] if a.keep_text else None)
        sent_s: float | None = None
        failure: Failed | None = None
        abandoned = False
        try:
            for timer in (total, self.first, abandon):
                if timer is not None:
                    timer.start()
            resp, sent_s = self._send(a.path, a.body, t0)
            got.http_status = resp.status_code
            if resp.status_code != 200:
                retry_after = resp.get("retry-after")
                if isinstance(retry_after, str) and retry_after.strip().replace(".", "", 1).isdigit():
                    got.retry_after_s = float(retry_after)
                body = resp.read(ERROR_BODY_LIMIT)
                detail = error_message(body) if body else f"HTTP {resp.status_code} with no body"
                raise Failed(_status_class(resp.status_code), detail)
            ctype = str(resp.get("content-type") or "")
            if "text/event-stream" not in ctype:
                raise Failed("malformed", f"expected a text/event-stream response, got {ctype or 'no content type'}")
            inline = InlineThinking(*a.think_tags) if a.think_tags else None
            got.end_s = self._read_events(got, resp, t0, inline, cancel.after_tokens if cancel else None)
            if got.reasoning_events and got.reasoning_events == len(got.event_times):
                raise Failed(  # vLLM issue 42548: a reasoning model can spend its whole budget thinking
                    "no_answer",
                    f"{got.reasoning_events} events of thinking and no answer (max_tokens {a.max_tokens})",
                    at_s=got.end_s,
                )
        except Failed as e:
            failure = e
        except Abandoned:
            abandoned = True
        except gevent.GreenletExit:
            failure = Failed("interrupted", "the run stopped while this request was in flight")
        except FirstTokenTimeout:
            failure = Failed("timeout", f"no output within the first-token timeout ({t.first_token_s:g} s)")
        except TotalTimeout:
            failure = Failed("timeout", f"the request outran the total timeout ({t.total_s:g} s)")
        except TimeoutError:
            idle = (
                f"no bytes for {t.idle_s:g} s (idle timeout)"
                if got.http_status
                else f"no response within {t.idle_s:g} s"
            )
            failure = Failed("timeout", idle)
        except StreamBroken as e:
            failure = Failed("stream_broken", str(e))
        except OSError as e:  # refused, reset, unreachable
            kind: ErrorKind = "connect" if got.http_status is None and self.sock is None else "stream_broken"
            failure = Failed(kind, f"{type(e).__name__}: {e}"[:300])
        except Exception as e:  # the HTTP parser rejects what the server sent
            failure = Failed("malformed", f"{type(e).__name__}: {e}"[:300])
        finally:
            for timer in (total, self.first, abandon):
                if timer is not None:
                    timer.close()
            # Keep the connection only after a complete response that allows keep-alive: an abandoned stream
            # is closed, which is how a server learns of it.
            if resp is None or not resp.message_complete or resp.should_close() or failure or abandoned:
                self.close()
        end_s = got.end_s
        if failure is not None:
            end_s = failure.at_s if failure.at_s is not None else time.perf_counter() - t0
        elif abandoned:
            end_s = time.perf_counter() - t0
        return a.result(sent_s, end_s, got, failure, abandoned)

    def _read_events(
        self,
        got: _Received,
        resp: HTTPSocketResponse,
        t0: float,
        inline: InlineThinking | None = None,
        abandon_at: int | None = None,
    ) -> float:
        """Read the stream to its end into `got`; returns when it ended, or raises Failed. `inline`: thinking
        written in the text between tags, split from the answer; `abandon_at`: the output tokens after which the
        workload abandons it (raises Abandoned)."""
        parser = SSEParser()
        times, tokens = got.event_times, got.event_tokens
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
                if c.error_kind is not None:
                    raise Failed(c.error_kind, c.error or c.error_kind, at_s=now)
                if c.done:
                    done = True
                    continue
                text, thinking = c.text, bool(c.reasoning)
                if inline is not None and text:
                    thought, text = inline.feed(text)
                    # A tag is a token of thinking; text held back (a tag's start, whitespace before any tag)
                    # is no event yet.
                    thinking = bool(thought) or (not text.strip() and inline.state != "before")
                if text or thinking:  # a token of any kind: thinking is generated output too
                    if text and got.text_parts is not None:
                        got.text_parts.append(text)  # the answer alone (a session resends it; thinking not)
                    if not times:
                        for timer in (self.first, self.abandon):
                            if timer is not None:
                                timer.close()  # the first token came in time
                    if thinking and not text.strip() and got.reasoning_events == len(times):
                        got.reasoning_events += 1  # thinking before the answer's first event
                    times.append(now)
                    tokens.append(1)
                    if abandon_at is not None and len(times) >= abandon_at:
                        raise Abandoned
                if c.completion_tokens is not None:
                    got.usage_completion_tokens = c.completion_tokens
                if c.reasoning_tokens is not None:
                    got.usage_reasoning_tokens = c.reasoning_tokens
                if c.prompt_tokens is not None:
                    got.server_prompt_tokens = c.prompt_tokens
                if c.cached_tokens is not None:
                    got.cached_tokens = c.cached_tokens
                if c.prefill_ms is not None:
                    got.server_prefill_ms = c.prefill_ms
                if c.decode_ms is not None:
                    got.server_decode_ms = c.decode_ms
                if c.handoff_ms is not None:
                    got.kv_handoff_ms, got.kv_bytes = c.handoff_ms, c.kv_bytes
            if kernel:  # several output events in one late read may have arrived apart: bound that error
                self.delays.add(read_at - arrived if len(times) - had > 1 else 0.0)
            if not chunk:
                if not done:
                    raise Failed("stream_broken", "the stream ended without data: [DONE]", at_s=now)
                return now
