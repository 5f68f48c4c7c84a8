"""Who is calling, and what they may do: from the uid the kernel gave, and agent.yml.

- Anyone with a login on the host may see the queue (each job's name, user, state and GPUs),
  submit, and upload.
- A job's config, logs, events and outputs are for its owner, the members of the owner's teams,
  and admins. Others get the job with those left out, and PERMISSION_DENIED for its events.
- Only the owner and admins may cancel a job, or pin it (keep its data from retention).
- A job's priority above the default is for admins, or up to a team's `max_priority` for its
  members; a job may name only a team its user belongs to.
- root is an admin, and so is every login listed in `admins`.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .accounts import login_of
from .config import TeamConfig
from .errors import PermissionDenied, Unauthenticated
from .jobs import Job, JobSpec
from .listener import peer_uid


@dataclass(frozen=True)
class Caller:
    uid: int
    user: str
    admin: bool
    teams: frozenset[str]


def _login(uid: int) -> str:
    return login_of(uid) or f"uid-{uid}"


class Identities:
    def __init__(
        self, private_dir: Path, admins: Iterable[str], teams: dict[str, TeamConfig]
    ) -> None:
        self.private_dir = private_dir
        self.admins = frozenset(admins)
        self.teams = teams

    def teams_of(self, user: str) -> frozenset[str]:
        return frozenset(name for name, team in self.teams.items() if user in team.members)

    def readers_of(self, user: str) -> frozenset[str]:
        """The logins besides user who may read user's jobs: admins and user's teammates."""
        mates = (m for t in self.teams_of(user) for m in self.teams[t].members)
        return (self.admins | frozenset(mates)) - {user}

    def caller(self, peer: str) -> Caller:
        """The caller of a call whose gRPC peer is `peer`; Unauthenticated unless the front
        door relayed it (a direct connection to the private socket is not possible for
        anybody but the agent's own user)."""
        uid = peer_uid(peer, self.private_dir)
        if uid is None:
            raise Unauthenticated(
                "calls reach the agent through its socket only (hatrain-client, or "
                "`hatrain-agent bridge` on the host)"
            )
        user = _login(uid)
        return Caller(uid, user, uid == 0 or user in self.admins, self.teams_of(user))

    def may_read(self, caller: Caller, job: Job) -> bool:
        return (
            caller.admin or caller.user == job.user or bool(caller.teams & self.teams_of(job.user))
        )

    def check_read(self, caller: Caller, job: Job) -> None:
        if not self.may_read(caller, job):
            raise PermissionDenied(
                f"job {job.id} belongs to {job.user}: its config, logs and outputs are for "
                "its owner, their team and admins"
            )

    def check_cancel(self, caller: Caller, job: Job) -> None:
        if not (caller.admin or caller.user == job.user):
            raise PermissionDenied(
                f"job {job.id} belongs to {job.user}; only its owner or an admin may cancel it"
            )

    def check_pin(self, caller: Caller, job: Job) -> None:
        if not (caller.admin or caller.user == job.user):
            raise PermissionDenied(
                f"job {job.id} belongs to {job.user}; only its owner or an admin may pin or "
                "unpin it"
            )

    def check_submit(self, caller: Caller, spec: JobSpec) -> None:
        if spec.team and spec.team not in caller.teams and not caller.admin:
            raise PermissionDenied(
                f"spec.team: {caller.user} is not a member of team {spec.team!r} "
                f"(teams: {', '.join(sorted(caller.teams)) or 'none'})"
            )
        if spec.priority > 0 and not caller.admin:
            allowed = max((self.teams[t].max_priority for t in caller.teams), default=0)
            if spec.priority > allowed:
                raise PermissionDenied(
                    f"spec.priority: at most {allowed} for {caller.user}, got {spec.priority} "
                    "(higher priorities are for admins, or a team's max_priority)"
                )
