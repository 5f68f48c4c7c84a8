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
    """A failure to report as one clear line, plus a fix when there is one.

    `fix` says what to do in words; `commands` are the shell commands that do it, each printed
    on a line of its own and never wrapped, so that it can be pasted as it is. `status` is how
    a host that failed this way shows in `hatrain-client hosts`."""

    exit_code = 1
    status = "error"

    def __init__(self, message: str, fix: str = "", commands: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.commands = tuple(commands)


class BadInput(ClientError):
    """The user's config, dataset or arguments are wrong; nothing was uploaded or submitted."""

    exit_code = EXIT_BAD_INPUT
    status = "bad input"


class HostUnreachable(ClientError):
    """No SSH connection to the host: it is down, its name is wrong, or the network is."""

    exit_code = EXIT_UNAVAILABLE
    status = "unreachable"


class AgentUnavailable(ClientError):
    """The host answers over SSH but its hatrain agent does not (not running, not installed)."""

    exit_code = EXIT_UNAVAILABLE
    status = "agent down"


class AuthenticationFailed(ClientError):
    """The host refused the SSH login: the keys offered are not accepted there."""

    exit_code = EXIT_PERMISSION
    status = "auth failed"


class NoSshKey(AuthenticationFailed):
    """There was no key to offer: no SSH agent holds one and no key file was found."""

    status = "no agent"


class HostKeyRejected(ClientError):
    """The host's key is not in known_hosts, or differs from the one recorded there."""

    exit_code = EXIT_PERMISSION
    status = "host key"


class AgentRefused(ClientError):
    """The agent answered with an error status (bad request, unknown job, not allowed); `code`
    is the gRPC status's name, e.g. NOT_FOUND."""

    exit_code = EXIT_BAD_INPUT
    status = "refused"

    def __init__(
        self, message: str, fix: str = "", code: str = "", commands: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, fix, commands)
        self.code = code
