"""The host account a job runs as and an upload is staged for: its user's own login.

A caller's account comes from the uid the kernel gave the front door (of_uid); a stored job's
from its user's login name, looked up when the job starts (lookup), so that an account removed
or changed meanwhile is seen as it is now.
"""

import os
import pwd
import re
import threading
import time
from dataclasses import dataclass

from .errors import PermissionDenied

# Login names as useradd takes them; nothing that could be read as a path.
_LOGIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")


class NoAccount(PermissionDenied):
    """The user has no login on this host: nothing can run or be stored as them."""

    def __init__(self, user: str) -> None:
        super().__init__(
            f"{user!r} has no account on this host: jobs run as their user's own login, "
            "so an admin must create it (useradd) first"
        )
        self.user = user


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    # Every group the login is in (its primary group included), as a login session gets them.
    groups: tuple[int, ...]

    @property
    def docker_user(self) -> str:
        return f"{self.uid}:{self.gid}"


def _account(entry: pwd.struct_passwd) -> Account:
    groups = tuple(dict.fromkeys([entry.pw_gid, *os.getgrouplist(entry.pw_name, entry.pw_gid)]))
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


class _ByUid:
    """Accounts by uid as NSS gives them, kept for a few seconds, as nscd would: every call asks
    for its caller's account, and NSS reads and parses the files each time it is asked. A
    change to an account is seen within _FRESH_SECONDS, a new account at once."""

    _FRESH_SECONDS = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[float, tuple[pwd.struct_passwd, Account]]] = {}

    def get(self, uid: int) -> tuple[pwd.struct_passwd, Account] | None:
        now = time.monotonic()
        with self._lock:
            kept = self._entries.get(uid)
        if kept is not None and now - kept[0] < self._FRESH_SECONDS:
            return kept[1]
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return None  # not kept: an account just created is found on the next call
        found = (entry, _account(entry))
        with self._lock:
            if len(self._entries) > 4096:
                self._entries.clear()
            self._entries[uid] = (now, found)
        return found


_BY_UID = _ByUid()


def login_of(uid: int) -> str | None:
    """uid's login name; None if the host has no account with that uid."""
    found = _BY_UID.get(uid)
    return found[0].pw_name if found else None


def of_uid(uid: int) -> Account:
    """The login of uid; NoAccount if the host has none (nothing is taken from a name)."""
    found = _BY_UID.get(uid)
    if found is None:
        raise NoAccount(f"uid {uid}")
    entry, account = found
    if not _LOGIN.match(entry.pw_name):
        raise NoAccount(entry.pw_name)
    return account


def lookup(user: str) -> Account:
    """The account named user; NoAccount if there is none."""
    if user in (".", "..") or not _LOGIN.match(user):
        raise NoAccount(user)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise NoAccount(user) from None
    return _account(entry)
