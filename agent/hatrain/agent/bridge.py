"""`hatrain-agent bridge`: the agent's socket on stdin and stdout, for a client over SSH.

The client runs it through its SSH login (as `docker -H ssh://` runs `docker system
dial-stdio`): the connection to the socket is then made by the user's own process on the host,
and the agent learns who they are from the kernel. It imports nothing but the standard library,
so that it starts at once.
"""

import contextlib
import os
import select
import socket
import sys

DEFAULT_SOCKET = "/run/hatrain/agent.sock"
EXIT_UNAVAILABLE = 69
_CHUNK = 256 * 1024


def relay(sock: socket.socket, stdin: int, stdout: int) -> None:
    """Copy stdin to the socket and the socket to stdout until either side ends."""
    sock_fd = sock.fileno()
    inputs = [stdin, sock_fd]
    while inputs:
        readable, _, _ = select.select(inputs, [], [])
        if stdin in readable:
            data = os.read(stdin, _CHUNK)
            if data:
                sock.sendall(data)
            else:
                inputs.remove(stdin)
                sock.shutdown(socket.SHUT_WR)
        if sock_fd in readable:
            data = sock.recv(_CHUNK)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(stdout, view) :]


def main(argv: list[str]) -> int:
    path = DEFAULT_SOCKET
    if argv[:1] == ["--socket"] and len(argv) == 2:
        path = argv[1]
    elif argv:
        print("usage: hatrain-agent bridge [--socket PATH]", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        print(f"no hatrain agent is listening at {path} ({exc.strerror})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
