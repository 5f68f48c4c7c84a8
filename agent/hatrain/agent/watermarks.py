"""The data root's free-space watermarks: below the low one new starts wait, below the high one
uploads are refused, each with a reason that names the free space and the setting."""

from collections.abc import Callable
from pathlib import Path

from .disk import free_bytes, human_bytes
from .errors import ResourceExhausted


class Watermarks:
    def __init__(
        self,
        root: Path,
        hold_starts_below: int,
        refuse_uploads_below: int,
        free: Callable[[Path], int] = free_bytes,
    ) -> None:
        self.root = root
        self.hold_starts_below = hold_starts_below
        self.refuse_uploads_below = refuse_uploads_below
        self._free = free

    def free(self) -> int:
        return self._free(self.root)

    def start_hold(self) -> str:
        """Why no job may start now (free space below the low watermark); empty if none."""
        free = self.free()
        if free >= self.hold_starts_below:
            return ""
        return (
            f"waiting for disk space: the data root {self.root} has {human_bytes(free)} free, "
            f"below retention.hold_starts_below ({human_bytes(self.hold_starts_below)}); "
            "expired data is swept every minute until there is room"
        )

    def below_high(self) -> bool:
        return self.free() < self.refuse_uploads_below

    def check_upload(self) -> None:
        """Raise ResourceExhausted while free space is below the high watermark."""
        free = self.free()
        if free < self.refuse_uploads_below:
            raise ResourceExhausted(
                f"uploads are refused: the agent's data root {self.root} has {human_bytes(free)} "
                f"free, below retention.refuse_uploads_below "
                f"({human_bytes(self.refuse_uploads_below)}); try again once finished jobs' "
                "data has been swept (an admin can run `hatrain-agent gc`)"
            )
