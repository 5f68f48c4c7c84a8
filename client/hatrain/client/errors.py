"""Everything the client can refuse or fail at, each with the exit code the CLI returns.

Exit codes (also in `hatrain-client --help` and the README):

- 0: success; for `wait`, the job succeeded.
- 1: the job failed (`wait`, a followed `submit`) and had no exit code of its own.
- 2: bad command line (click's own usage errors).
- 65: bad input: the Axolotl config, a dataset, the client config, a job the agent refused.
- 69: a host cannot be reached, or its agent is not running.
- 77: SSH authentication failed, or the host key is unknown or changed.
- 130: detached with Ctrl-C (the job keeps running), or `wait` saw the job cancelled.
- other: `wait` and a followed `submit` return the failed job's own exit code.
"""

EXIT_BAD_INPUT = 65
EXIT_UNAVAILABLE = 69
EXIT_PERMISSION = 77
EXIT_DETACHED = 130


class ClientError(Exception):
    """A failure to report as one clear line (plus a fix, when there is one)."""

    exit_code = 1

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class BadInput(ClientError):
    """The user's config, dataset or arguments are wrong; nothing was uploaded or submitted."""

    exit_code = EXIT_BAD_INPUT


class HostUnreachable(ClientError):
    exit_code = EXIT_UNAVAILABLE


class AgentUnavailable(ClientError):
    exit_code = EXIT_UNAVAILABLE


class AuthenticationFailed(ClientError):
    exit_code = EXIT_PERMISSION


class HostKeyRejected(ClientError):
    """The host's key is not in known_hosts, or differs from the one recorded there."""

    exit_code = EXIT_PERMISSION


class AgentRefused(ClientError):
    """The agent answered with an error status (bad request, unknown job, not allowed); `code`
    is the gRPC status's name, e.g. NOT_FOUND."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, fix: str = "", code: str = "") -> None:
        super().__init__(message, fix)
        self.code = code
