"""`hatrain-agent tensorboard JOB… [--mine]`: TensorBoard as the user, for as long as asked.

The client runs this over the user's SSH login, so it runs as that user. It asks the agent,
through the agent's socket (the kernel says who asks), which run dirs the user may read and
which Python has TensorBoard, then serves them on a Unix socket in a new 0700 directory. Once
TensorBoard answers it prints one JSON line, {"socket": PATH, "runs": [...]}, for the client,
which forwards a local port to that socket over the same SSH connection.

It ends, stopping TensorBoard and removing the directory, when its stdin ends (the client exited
or its connection dropped: sshd closes the session), on SIGTERM or SIGHUP, or when TensorBoard
exits.
"""

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

SERVER_SCRIPT = Path(__file__).with_name("tensorboard_server.py")
# TensorBoard loads its plugins (and TensorFlow's stub) before it listens: seconds on a busy host.
START_TIMEOUT = 180.0
EXIT_FAILED = 1


class _Ended(Exception):
    pass


def ask_plan(agent_socket: str, job_ids: list[str], mine: bool) -> pb.TensorBoardPlan:
    with grpc.insecure_channel(f"unix:{agent_socket}") as channel:
        stub = pb_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        request = pb.PlanTensorBoardRequest(job_ids=job_ids, mine=mine)
        return stub.PlanTensorBoard(request, timeout=60)  # type: ignore[no-any-return]


def logdir_spec(runs: list[pb.TensorBoardRun]) -> str:
    """name:path,… with each job's id as its name (ids have no ',' or ':')."""
    for run in runs:
        if "," in run.run_dir:
            raise ValueError(f"the run dir {run.run_dir} has a ',' which TensorBoard cannot read")
    return ",".join(f"{run.job_id}:{run.run_dir}" for run in runs)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _wait_until_serving(server: "subprocess.Popen[bytes]", path: Path, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(path):
        if server.poll() is not None:
            said = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError("TensorBoard exited: " + " | ".join(said))
        if time.monotonic() > deadline:
            raise RuntimeError(f"TensorBoard did not answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def _wait_for_end(server: "subprocess.Popen[bytes]") -> None:
    """Until stdin ends (the client is gone) or TensorBoard exits."""
    stdin = sys.stdin.fileno()
    while server.poll() is None:
        readable, _, _ = select.select([stdin], [], [], 1.0)
        if readable and not os.read(stdin, 4096):
            return


def _stop(server: "subprocess.Popen[bytes]") -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main(agent_socket: str, job_ids: list[str], mine: bool) -> int:
    def end(*_: object) -> None:
        raise _Ended

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, end)
    try:
        plan = ask_plan(agent_socket, job_ids, mine)
        spec = logdir_spec(list(plan.runs))
    except grpc.RpcError as exc:
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        print(details or str(exc), file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    private = Path(tempfile.mkdtemp(prefix="hatrain-tb-"))  # 0700: this user's alone
    path = private / "tb.sock"
    log = private / "tensorboard.log"
    server: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            server = subprocess.Popen(
                # -I: the script's own directory stays off sys.path (and so does the user's
                # site-packages): `tensorboard` is the venv's.
                [plan.python, "-I", str(SERVER_SCRIPT), str(path), spec],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_until_serving(server, path, log)
        runs = [{"job_id": r.job_id, "name": r.name, "run_dir": r.run_dir} for r in plan.runs]
        print(json.dumps({"socket": str(path), "runs": runs}), flush=True)
        _wait_for_end(server)
        return 0
    except (RuntimeError, OSError) as exc:  # OSError: the venv's Python cannot be started
        print(f"cannot serve TensorBoard: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except _Ended:
        return 0
    finally:
        with contextlib.suppress(_Ended):
            if server is not None:
                _stop(server)
            shutil.rmtree(private, ignore_errors=True)
