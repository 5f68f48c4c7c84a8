"""Real Unix accounts for the tests, and running code as them.

The test agents run as root, as the agent does in production; jobs run as the account of the
user who submitted them, so the tests create ordinary accounts (idempotently: an account already
there is used as it is).
"""

import os
import pwd
import subprocess
import tempfile
from pathlib import Path

from tests.support.harness import TEST_USER, poll

ALICE = TEST_USER
BOB = "hatrain-bob"
# /etc/passwd is locked while another useradd (a test run beside this one) writes it.
_PASSWD_BUSY = 10


def ensure_account(name: str) -> pwd.struct_passwd:
    """The account name, created as an ordinary login with a home and a group of its own."""

    def created() -> pwd.struct_passwd | None:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        done = subprocess.run(
            ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 9, _PASSWD_BUSY):  # 9: it exists (created meanwhile)
            raise RuntimeError(f"useradd {name} exited {done.returncode}: {done.stderr.strip()}")
        return None

    return poll(created, 30, f"the account {name}", every=0.2)


def run_as(name: str, *argv: str, **kwargs: object) -> "subprocess.CompletedProcess[str]":
    """Run argv as the account name (its uid, gid and groups), as a process of that user's."""
    return subprocess.run(  # type: ignore[call-overload]
        ["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups", *argv],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )


def reachable_dir(prefix: str) -> Path:
    """A new directory under /tmp that every account can pass through (0755; pytest's own
    tmp_path is in a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path
