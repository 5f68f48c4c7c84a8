"""Docker's multiplexed frames read back into text: whatever the pieces the socket hands over,
and from any cursor, exactly the bytes of each stream, in whole lines."""

import random

from hatrain.agent.docker_logs import StreamReader


def _frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


# stdout lines one frame each, a stderr line in two frames, a line split over two frames, a
# multi-byte character cut between frames, a bar update ended by \r, and a last line without
# its newline.
FRAMES = [
    _frame(1, b"first\n"),
    _frame(1, b"second\n"),
    _frame(2, b"warn "),
    _frame(2, b"line\n"),
    _frame(1, b"half "),
    _frame(1, b"and half\n"),
    _frame(1, "caf\u00e9 \u00e9t\u00e9\n".encode()[:4]),
    _frame(1, "caf\u00e9 \u00e9t\u00e9\n".encode()[4:]),
    _frame(1, b" 50%|#####| 5/10\r"),
    _frame(2, b"tail"),
]
STDOUT = (
    b"first\nsecond\nhalf and half\n" + "caf\u00e9 \u00e9t\u00e9\n".encode() + b" 50%|#####| 5/10\r"
)
STDERR = b"warn line\ntail"


def _read(data: bytes, cursor: tuple[int, int] | None, cuts: list[int]) -> tuple[str, StreamReader]:
    reader = StreamReader(cursor)
    pieces, last = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(reader.feed(data[last:cut]))
        last = cut
    return "".join(pieces) + reader.finish(), reader


def test_frames_in_any_pieces_read_as_the_streams_bytes() -> None:
    """Cut at every byte, or at random places, the frames give each stream's bytes in order,
    never a line of one stream inside a line of the other, and the cursor counts every byte."""
    data = b"".join(FRAMES)
    whole, reader = _read(data, None, [])
    assert sorted(whole.splitlines(keepends=True)) == sorted(
        STDOUT.decode().splitlines(keepends=True) + STDERR.decode().splitlines(keepends=True)
    )
    assert reader.cursor() == (len(STDOUT), len(STDERR))
    rng = random.Random(3)
    for cuts in [
        list(range(1, len(data))),
        *(sorted(rng.sample(range(1, len(data)), 7)) for _ in range(50)),
    ]:
        text, reader = _read(data, None, cuts)
        assert sorted(text.splitlines(True)) == sorted(whole.splitlines(True)), cuts
        assert reader.cursor() == (len(STDOUT), len(STDERR))


def test_a_cursor_skips_exactly_what_was_read() -> None:
    """From the cursor of a first read, a replay of the same frames gives only what came after
    it, in each stream."""
    data = b"".join(FRAMES)
    first = b"".join(FRAMES[:4])
    _, reader = _read(first, None, [])
    cursor = reader.cursor()
    assert cursor == (len(b"first\nsecond\n"), len(b"warn line\n"))
    rest, after = _read(data, cursor, [11, 40])
    assert rest.startswith("half and half\n") and rest.endswith("tail")
    assert "first" not in rest and "warn" not in rest
    assert after.cursor() == (len(STDOUT), len(STDERR))
