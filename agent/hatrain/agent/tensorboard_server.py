"""TensorBoard on a Unix socket, run by the Python of the virtualenv that has TensorBoard.

    python tensorboard_server.py SOCKET LOGDIR_SPEC

It imports nothing of hatrain (that venv need not have it). TensorBoard's own command listens
on TCP only, where any login on the host could connect; a Unix socket in a private directory
is reachable by its user alone, and by the client through that user's SSH login.
"""

import signal
import sys
import threading
from typing import Any

from tensorboard import default, program  # type: ignore[import-not-found]
from werkzeug import serving  # type: ignore[import-not-found]


def main(socket_path: str, logdir_spec: str) -> int:
    class UnixSocketServer(serving.ThreadedWSGIServer, program.TensorBoardServer):  # type: ignore[misc]
        def __init__(self, wsgi_app: Any, flags: Any) -> None:
            super().__init__(f"unix://{socket_path}", 0, wsgi_app)

        def get_url(self) -> str:
            return f"http+unix://{socket_path}/"

    board = program.TensorBoard(plugins=default.get_plugins(), server_class=UnixSocketServer)
    board.configure(logdir_spec=logdir_spec, reload_interval=2.0)
    print(board.launch(), flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
