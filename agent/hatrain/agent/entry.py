"""The `hatrain-agent` command: `bridge` starts without loading the agent (see bridge.py)."""

import sys


def main() -> None:
    if sys.argv[1:2] == ["bridge"]:
        from .bridge import main as bridge

        sys.exit(bridge(sys.argv[2:]))
    from .cli import main as cli

    cli()
