"""A ground-truth streaming server for measuring loadgen itself.

It sends the first event A ms after a request arrived, then one token every B ms, and logs when each request
really arrived (the kernel's receive stamp) and when it really wrote each event, on CLOCK_MONOTONIC, the clock
loadgen stamps with; so what loadgen stored can be compared with what happened on the wire. It is a small
single-threaded HTTP/1.1 server on raw sockets rather than a framework, because a framework would only know a
request once its own queue got to it, which under 64 simultaneous arrivals is milliseconds late.
With A = B = 0 it writes each whole response at once: a server that is never the bottleneck.

    python benchmarks/truth_server.py --ttft-ms 50 --itl-ms 10 --log truth.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import selectors
import signal
import socket
import struct
import time

import orjson

SO_TIMESTAMPNS = 35  # Linux; Python does not name it
TIMESPEC = struct.Struct("qq")


def prompt_key(prompt: str) -> str:
    return hashlib.sha1(prompt.encode()).hexdigest()[:16]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
MODELS = b'{"object":"list","data":[{"id":"llama-2-7b","object":"model"}]}'


class Server:
    def __init__(self, ttft_ms: float, itl_ms: float, log_path: str | None, port: int):
        self.ttft_s, self.itl_s = ttft_ms / 1000, itl_ms / 1000
        self.log = open(log_path, "ab") if log_path else None
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.buffers: dict[socket.socket, bytes] = {}
        # (due, tie-breaker, connection, bytes to write, the request's log record, whether it is the last write)
        self.timers: list[tuple[float, int, socket.socket, bytes, dict, bool]] = []
        self.seq = itertools.count()
        self.running = True

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def _recv(self, sock: socket.socket) -> tuple[bytes, float]:
        data, anc, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(TIMESPEC.size))
        now = time.perf_counter()
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack_from(raw)
                return data, now - (time.time() - (sec + nsec * 1e-9))
        return data, now

    def _request(self, sock: socket.socket, head: bytes, body: bytes, arrived: float) -> None:
        if head.startswith(b"GET"):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(MODELS), MODELS))
            return
        req = orjson.loads(body)
        chat = "messages" in req
        prompt = req["messages"][-1]["content"] if chat else req["prompt"]
        n = int(req.get("max_tokens") or req.get("max_completion_tokens") or 16)
        event = (
            b'data: {"choices":[{"index":0,"delta":{"content":" tok"}}]}\n\n'
            if chat
            else b'data: {"choices":[{"index":0,"text":" tok"}]}\n\n'
        )
        usage = orjson.dumps({"prompt_tokens": len(prompt.split()), "completion_tokens": n})
        tail = chunk(b'data: {"choices":[],"usage":' + usage + b"}\n\ndata: [DONE]\n\n") + b"0\r\n\r\n"
        record = {"key": prompt_key(prompt), "recv": arrived, "sent": [], "max_tokens": n}
        if self.ttft_s == 0 and self.itl_s == 0:
            record["sent"].append(time.perf_counter())
            sock.sendall(HEAD + chunk(event * n) + tail)
            self._write_log(record)
            return
        sock.sendall(HEAD)
        for i in range(n):
            last = i == n - 1
            payload = chunk(event) + (tail if last else b"")
            due = arrived + self.ttft_s + i * self.itl_s
            heapq.heappush(self.timers, (due, next(self.seq), sock, payload, record, last))

    def _write_log(self, record: dict) -> None:
        if self.log is not None:
            self.log.write(orjson.dumps(record) + b"\n")

    def _readable(self, sock: socket.socket) -> None:
        try:
            data, arrived = self._recv(sock)
        except ConnectionError:
            data = b""
        if not data:
            self.sel.unregister(sock)
            self.buffers.pop(sock, None)
            sock.close()
            return
        buf = self.buffers.get(sock, b"") + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(buf) < end + 4 + length:
                break
            body = buf[end + 4 : end + 4 + length]
            buf = buf[end + 4 + length :]
            self._request(sock, head, body, arrived)
        self.buffers[sock] = buf

    def _fire_timers(self) -> None:
        now = time.perf_counter()
        while self.timers and self.timers[0][0] <= now:
            _, _, sock, payload, record, last = heapq.heappop(self.timers)
            record["sent"].append(time.perf_counter())
            try:
                sock.sendall(payload)
            except OSError:
                continue
            if last:
                self._write_log(record)
            now = time.perf_counter()

    def serve(self) -> None:
        while self.running:
            timeout = max(self.timers[0][0] - time.perf_counter(), 0) if self.timers else 0.5
            for key, _ in self.sel.select(timeout):
                sock = key.fileobj
                if sock is self.listener:
                    try:
                        conn, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(True)  # writes are small; reads happen only when the selector says so
                    conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.sel.register(conn, selectors.EVENT_READ)
                else:
                    self._readable(sock)  # type: ignore[arg-type]
            self._fire_timers()
        if self.log is not None:
            self.log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=10.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", help="JSONL file of real arrival and send times, one line per request")
    args = p.parse_args()
    server = Server(args.ttft_ms, args.itl_ms, args.log, args.port)

    def stop(*_: object) -> None:
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"http://127.0.0.1:{server.port}/v1", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
