"""Who besides its user may read a job's files on the host, so that a login's own SSH and SFTP
allow what hatrain allows: a job's owner, the members of the owner's teams and the admins read
its run directory (and what the job writes there later); nobody else.

Granted as POSIX ACL entries, written as the kernel takes them in the system.posix_acl_access and
system.posix_acl_default extended attributes (linux/posix_acl_xattr.h: version 2, then one
(tag, permissions, id) entry after another, in the kernel's order). The owner keeps full
control: they may narrow the ACL of their own directory as they may chmod it.
"""

import errno
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_VERSION = struct.Struct("<I").pack(2)
_ENTRY = struct.Struct("<HHI")
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_READ = 0o5  # read and search
_UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)


def _acl(readers: list[int], group: int) -> bytes:
    entries = [
        (_USER_OBJ, 0o7, _NO_ID),
        *((_USER, _READ, uid) for uid in readers),
        (_GROUP_OBJ, group, _NO_ID),
        (_MASK, _READ | group, _NO_ID),
        (_OTHER, 0, _NO_ID),
    ]
    return _VERSION + b"".join(_ENTRY.pack(*entry) for entry in entries)


def let_read(path: Path, readers: Iterable[int], *, group: int = 0, inherit: bool = False) -> None:
    """Let the uids in readers read and search the directory path, beside its owner (rwx) and its
    group (the bits given); others get nothing. inherit: what is created in it later gets the
    same entries. Nothing to do without readers (the mode says it all); a filesystem without
    ACLs is logged and left as the mode says."""
    uids = sorted(set(readers))
    if not uids:
        return
    acl = _acl(uids, group)
    try:
        os.setxattr(path, "system.posix_acl_access", acl, follow_symlinks=False)
        if inherit:
            os.setxattr(path, "system.posix_acl_default", acl, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        log.warning(
            "no ACLs on the data root's filesystem: admins and team members cannot read "
            "run directories through their own logins",
            path=str(path),
        )
