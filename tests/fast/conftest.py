"""Fixtures of the fast tier: a host over the InMemoryRuntime test double (tests/fast/host.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fast.host import FastHost


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FastHost]:
    """A data root with its store and runtime, and no agent started yet."""
    made = FastHost(tmp_path / "data")
    yield made
    made.stop()
