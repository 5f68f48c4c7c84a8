"""Directories the agent lays out for users, with the owner and mode each must have.

The rule that keeps this safe while the agent is root: it only ever creates or changes an entry
in a directory that root alone can write (an agent_dir). A user may own a leaf (their run
directory, their cache, their staging directory) and do what they like inside it, but never the
directory that holds it, so they cannot swap it for a symlink to somewhere else before the agent
acts on it.
"""

import os
import stat
from pathlib import Path

from .accounts import Account


def _directory(path: Path, mode: int) -> os.stat_result:
    """mkdir -p (a new directory made with mode), then make sure what is there is a directory
    and not a link to one; returns what lstat says of it."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.mkdir(mode, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeError(f"{path} is not a directory (a symlink or file took its place)")
    return info


def _settle(path: Path, info: os.stat_result, uid: int, gid: int, mode: int) -> Path:
    """Give path this owner and mode, changing only what differs: a job's start lays out a
    dozen directories, most of them right already, and every change is a journalled write."""
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)
        info = os.lstat(path)  # a chown may clear mode bits
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
    return path


def agent_dir(path: Path, mode: int, group: int | None = None) -> Path:
    """A directory of the agent's own (root's, as it runs; group: the agent's unless given)
    with mode, e.g. 0o711: users may pass through it to what is theirs, not list or change it."""
    gid = os.getegid() if group is None else group
    return _settle(path, _directory(path, mode), os.geteuid(), gid, mode)


def owned_dir(path: Path, owner: Account, mode: int = 0o700) -> Path:
    """A directory of the owner's, with mode; its parent must be an agent_dir."""
    return _settle(path, _directory(path, mode), owner.uid, owner.gid, mode)


def give_files(path: Path, owner: Account, mode: int) -> None:
    """Hand the regular files directly in path (written by the agent) to the owner, with mode.
    Done before path itself is handed over, while only root can change what is in it."""
    for entry in os.scandir(path):
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchown(fd, owner.uid, owner.gid)
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
