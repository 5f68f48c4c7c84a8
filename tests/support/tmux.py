"""A real terminal for the client: tmux, on a server of the test's own, at a set size."""

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


class Terminal:
    """One tmux session running one command; `screen()` is what a person would see."""

    def __init__(self, width: int, height: int) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed: run `make test` (scripts/setup-host.sh)")
        self.width, self.height = width, height
        self._dir = Path(tempfile.mkdtemp(prefix="htm-", dir="/tmp"))
        self.socket = self._dir / "tmux.sock"

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    def start(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        """Run argv in the terminal, with exactly this environment; the pane stays once the
        command ends, so that its last screen can still be read."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        command = f"cd {shlex.quote(str(cwd))} && exec env -i {exports} {shlex.join(argv)}"
        conf = self._dir / "tmux.conf"
        conf.write_text("set-option -g remain-on-exit on\nset-option -g status off\n")
        self._tmux(
            "-f", str(conf), "new-session", "-d", "-s", "t",
            "-x", str(self.width), "-y", str(self.height), command,
        )  # fmt: skip

    def screen(self) -> list[str]:
        """The visible lines, trailing spaces cut."""
        text = self._tmux("capture-pane", "-p", "-t", "t")
        return [line.rstrip() for line in text.split("\n")][: self.height]

    def text(self) -> str:
        """What the pane shows, a line the terminal wrapped joined back into one."""
        joined = self._tmux("capture-pane", "-p", "-J", "-t", "t")
        return "\n".join(line.rstrip() for line in joined.split("\n")).rstrip() + "\n"

    def exited(self) -> bool:
        return self._tmux("display-message", "-p", "-t", "t", "#{pane_dead}").strip() == "1"

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True)
        shutil.rmtree(self._dir, ignore_errors=True)
