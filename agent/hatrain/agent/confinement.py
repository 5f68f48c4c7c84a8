"""What a job's processes run as, and within which limits: its user's own account, never root's
powers.

In a container: the user's uid, gid and groups, every capability dropped, no way to gain
privileges back (setuid files and file capabilities do nothing), and the admin's memory, process
and /dev/shm limits. On the host (the `local` runtime): the user's uid, gid and groups through
setpriv, with no_new_privs set.
"""

import os
import re
import shutil
from typing import Any

from .accounts import Account
from .config import ContainerLimits, DockerConfig

_SHARE = re.compile(r"^([0-9]+)%$")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit(limits: ContainerLimits) -> str | int:
    """limits.memory as Docker takes it: a share of the host's RAM becomes bytes."""
    share = _SHARE.match(limits.memory)
    if share is None:
        return limits.memory
    return host_memory_bytes() * int(share.group(1)) // 100


def container_options(config: DockerConfig, owner: Account) -> dict[str, Any]:
    """The containers.create() arguments that confine a step to its user and the limits."""
    memory = memory_limit(config.limits)
    options: dict[str, Any] = {
        "user": owner.docker_user,
        "group_add": [str(g) for g in owner.groups if g != owner.gid],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": memory,
        "memswap_limit": memory,  # the same figure: no swap on top
        "pids_limit": config.limits.pids,
    }
    if config.ipc_host:
        options["ipc_mode"] = "host"
    else:
        options["shm_size"] = config.limits.shm_size
    return options


def run_as(owner: Account) -> list[str]:
    """The command prefix that runs what follows as owner (uid, gid, and the login's groups),
    with no_new_privs: a setuid file it finds or makes cannot raise it."""
    setpriv = shutil.which("setpriv", path=SYSTEM_PATH)
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is missing: apt-get install util-linux")
    return [
        setpriv,
        f"--reuid={owner.uid}",
        f"--regid={owner.gid}",
        "--init-groups",
        "--no-new-privs",
    ]


def user_env(owner: Account, home: str, shared_hub: str | None) -> dict[str, str]:
    """The environment a login of the user would have (tools such as torch's compile cache read
    USER), its HOME, and the shared hub cache when the admin gave one."""
    env = {"HOME": home, "USER": owner.name, "LOGNAME": owner.name}
    if shared_hub is not None:
        env["HF_HUB_CACHE"] = shared_hub
    return env
