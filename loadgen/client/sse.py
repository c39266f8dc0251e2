"""An incremental Server-Sent Events parser (WHATWG rules) that accepts bytes as they arrive.

Lines may end in LF, CRLF or a lone CR, and a line ending may be split across reads. Each complete event
is returned as its `data` payload (multi-line data joined with LF); comments and fields other than `data`
are ignored, and an event with no data lines is not dispatched.
"""

from __future__ import annotations


class SSEParser:
    __slots__ = ("_buf", "_data", "_cr")

    def __init__(self) -> None:
        self._buf = b""  # bytes of an unfinished line
        self._data: list[bytes] = []  # data lines of the event being built
        self._cr = False  # the previous chunk ended in CR, so a leading LF belongs to that line ending

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume a chunk; return the data payloads of the events it completed."""
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk
        *lines, self._buf = buf.split(b"\n")
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data = self._data = []
                continue
            if line.startswith(b"data"):
                field, _, value = line.partition(b":")
                if field != b"data":
                    continue
                data.append(value[1:] if value.startswith(b" ") else value)
            # Comments (":...") and the event/id/retry fields carry nothing loadgen measures.
        return events

    def close(self) -> list[bytes]:
        """End of stream: an event without its closing blank line is still delivered (servers do this)."""
        self._cr = False
        return self.feed(b"\n\n") if (self._buf or self._data) else []
