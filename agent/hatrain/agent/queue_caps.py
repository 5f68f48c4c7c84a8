"""Caps on the jobs a user or a team may have queued: a submit past one is refused, naming it."""

from collections.abc import Callable

from .config import SchedulerConfig
from .errors import ResourceExhausted
from .scheduler import cap_for


def queue_cap_check(
    config: SchedulerConfig, queued_by: Callable[[str, str], tuple[int, int]]
) -> Callable[[str, str, int, int], None]:
    """check(user, team, user_adding, team_adding): raises ResourceExhausted when one more
    queued job would pass a cap, with the adding counts (jobs of the same batch, not yet
    committed) already on top. queued_by(user, team) counts their queued jobs; it is only asked
    when a cap applies."""

    def check(user: str, team: str, user_adding: int, team_adding: int) -> None:
        user_cap = cap_for(config.user_queued_caps, user)
        team_cap = cap_for(config.team_queued_caps, team) if team else None
        if user_cap is None and team_cap is None:
            return
        by_user, by_team = queued_by(user, team)
        by_user, by_team = by_user + user_adding, by_team + team_adding
        if user_cap is not None and by_user >= user_cap:
            raise ResourceExhausted(
                f"user cap: {user} has {by_user} jobs queued of {user_cap} "
                "(scheduler.user_queued_caps); submit again once some have started"
            )
        if team_cap is not None and by_team >= team_cap:
            raise ResourceExhausted(
                f"team cap: team {team} has {by_team} jobs queued of {team_cap} "
                "(scheduler.team_queued_caps); submit again once some have started"
            )

    return check
