"""A container's output as Docker sends it: multiplexed frames, over attach or the log endpoint.

A step's output is read live from the attach stream opened before the container starts: bytes as
the step writes them, with nothing in between. After an agent restart it is read from the log
endpoint (Docker's log file), which replays from the start and then follows.

Following the log endpoint, dockerd flushes every log line as an HTTP chunk of its own. Read
through http.client, that is one read call and one tiny piece of text per line, which costs more
than everything else the agent does with the line. Here the socket is read as much as has arrived
at once, and the chunk and frame headers are taken apart in one pass over the bytes.
"""

import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

READ_SIZE = 256 * 1024
GATHER_SECONDS = 0.005
GATHER_BELOW = 4096  # a piece this small is a trickle of lines: wait for more before reading
_HEADER = struct.Struct(">B3xI")  # a frame's stream, and the length of the bytes after it


def gathered(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """What read() returns until it returns nothing, many lines to a piece: for a live stream.

    A step prints line by line (PYTHONUNBUFFERED), and each line would otherwise cost a read, a
    hand-over between threads and a parse of its own: several times what the line itself costs.
    After a small piece the next read waits a moment, and takes everything that came meanwhile;
    while output pours out, pieces are large and nothing waits.
    (Not for a replay, which comes in pieces of a few kilobytes as fast as it can.)
    """
    while data := read(READ_SIZE):
        yield data
        if len(data) < GATHER_BELOW:
            time.sleep(GATHER_SECONDS)


def body_pieces(response: Any) -> Iterator[bytes]:
    """The body of a streamed `requests` response, in pieces as large as have arrived."""
    raw = response.raw
    buffered = getattr(getattr(raw, "_fp", None), "fp", None)
    if buffered is None or response.headers.get("Transfer-Encoding", "").lower() != "chunked":
        while data := raw.read1(READ_SIZE):
            yield data
        return
    chunks = Dechunker()
    while not chunks.done and (data := buffered.read1(READ_SIZE)):
        if body := chunks.feed(data):
            yield body


class Dechunker:
    """Undoes HTTP/1.1 chunked transfer coding over arbitrary pieces of the stream."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data_left = 0  # bytes of the current chunk not yet seen
        self._skip = 0  # the CRLF after a chunk's data
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        pos, end = 0, len(buffer)
        while pos < end and not self.done:
            if self._skip:
                taken = min(self._skip, end - pos)
                pos += taken
                self._skip -= taken
            elif self._data_left:
                taken = min(self._data_left, end - pos)
                out.append(buffer[pos : pos + taken])
                pos += taken
                self._data_left -= taken
                if not self._data_left:
                    self._skip = 2
            else:
                eol = buffer.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buffer[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                self._data_left = size
                self.done = size == 0
        self._buffer = buffer[pos:]
        return b"".join(out)


class StreamReader:
    """Docker's multiplexed frames (an 8-byte header: stream, length; then the bytes) to text.

    stdout and stderr are assembled apart and handed out in whole segments, each ending at a
    newline or at the `\\r` of a bar update, so the two streams never cut into each other's lines
    and no UTF-8 sequence is split. The cursor is how many bytes of each stream were handed out:
    the attach stream and the log file carry the same bytes, so either can resume from it.
    """

    _LONGEST_SEGMENT = 64 * 1024

    def __init__(self, cursor: Sequence[int] | None) -> None:
        self._skip = [int(cursor[0]), int(cursor[1])] if cursor else [0, 0]
        self._given = list(self._skip)
        self._partial = [b"", b""]
        self._buffer = b""

    def cursor(self) -> tuple[int, int]:
        return (self._given[0], self._given[1])

    def feed(self, data: bytes) -> str:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        bodies: list[bytes] = []  # consecutive frames of one stream, taken together
        append = bodies.append
        header = _HEADER.unpack_from
        skip = self._skip
        skipping = skip[0] or skip[1]
        current = 0
        kind_now = 1
        pos, end = 0, len(buffer)
        # One pass, as little as can be done per frame: a job printing line by line sends a
        # frame per line, and most frames are of the same stream as the one before.
        while end - pos >= 8:
            kind, length = header(buffer, pos)
            start = pos + 8
            following = start + length
            if following > end:
                break
            if kind != kind_now:
                kind_now = kind
                stream = 1 if kind == 2 else 0  # 1 stdout (0 stdin, never sent), 2 stderr
                if stream != current:
                    if bodies:
                        self._take(current, b"".join(bodies), out)
                        bodies = []
                        append = bodies.append
                    current = stream
            if skipping and skip[current]:
                cut = min(skip[current], length)
                skip[current] -= cut
                start += cut
            append(buffer[start:following])
            pos = following
        if bodies:
            self._take(current, b"".join(bodies), out)
        self._buffer = buffer[pos:]
        return b"".join(out).decode("utf-8", errors="replace")

    def _take(self, stream: int, body: bytes, out: list[bytes]) -> None:
        if not body:
            return
        text = self._partial[stream] + body if self._partial[stream] else body
        cut = max(text.rfind(b"\n"), text.rfind(b"\r")) + 1
        if len(text) - cut > self._LONGEST_SEGMENT:
            cut = len(text)
        if cut:
            out.append(text[:cut])
            self._given[stream] += cut
        self._partial[stream] = text[cut:]

    def finish(self) -> str:
        """What is left when the stream ends: a last line without its newline."""
        rest = self._partial[0] + self._partial[1]
        self._given = [
            self._given[0] + len(self._partial[0]),
            self._given[1] + len(self._partial[1]),
        ]
        self._partial = [b"", b""]
        return rest.decode("utf-8", errors="replace")
