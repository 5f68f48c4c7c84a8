"""agent.yml for the `local` runtime running the real Axolotl from its virtualenv, offline."""

from pathlib import Path
from typing import Any

from tests.support.harness import socket_path


def local_axolotl_agent_config(data_root: Path, axolotl_venv: Path) -> dict[str, Any]:
    return {
        "data_root": str(data_root),
        "listen": str(socket_path()),
        "log_format": "console",
        "runtime": "local",
        "local": {
            "venv": str(axolotl_venv),
            "env": {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        },
    }
