"""Pulling a missing image: from a real registry (the distribution registry on loopback).

dockerd treats registries on 127.0.0.0/8 as plain-HTTP ones, so no TLS set-up is needed.
"""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import (
    TERMINAL,
    all_events,
    free_port,
    spec,
    wait_for_port,
    wait_state,
)
from tests.support.images import rootfs_tar

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry on a loopback port holding the test image as <registry>/hatrain-test/pulled:1."""
    if not Path(REGISTRY).exists():
        raise RuntimeError("docker-registry is missing: run scripts/setup-host.sh")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    proc = subprocess.Popen(
        [REGISTRY, "serve", str(root / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=(root / "registry.log").open("wb"),
    )
    wait_for_port(port, proc, root / "registry.log")
    client = docker.from_env()
    address = f"127.0.0.1:{port}"
    # Layers of its own (not shared with any image on the host), so that a pull downloads them.
    payload = {"opt/payload.bin": os.urandom(8 * 2**20)}
    client.api.import_image_from_data(
        rootfs_tar(payload), repository=f"{address}/hatrain-test/pulled", tag="1"
    )
    for line in client.api.push(
        f"{address}/hatrain-test/pulled", tag="1", stream=True, decode=True
    ):
        assert "error" not in line, line
    yield address
    proc.terminate()
    proc.wait()


def test_a_missing_image_is_pulled_with_progress(
    registry: str, agent_config: dict[str, Any], start_agent: Any
) -> None:
    """The job's image is not on the host: the agent pulls it (progress events of step `pull`),
    then runs the job; an allowed image the registry lacks fails with `image pull failed`."""
    image = f"{registry}/hatrain-test/pulled:1"
    absent = f"{registry}/hatrain-test/absent:1"
    client = docker.from_env()
    client.images.remove(image, force=True)
    agent_config["docker"] |= {"allowed_images": [image, absent], "pull_missing": True}
    stub, _ = start_agent(agent_config)

    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}, image=image))).job
    done = wait_state(stub, job.id, TERMINAL, timeout=120)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done
    pulls = [
        e.progress
        for e in all_events(stub, job.id)
        if e.kind == pb.EVENT_KIND_PROGRESS and e.step == "pull"
    ]
    assert pulls and pulls[-1].unit == "B" and pulls[-1].total > 0
    assert client.images.get(image)

    missing = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}, image=absent))).job
    failed = wait_state(stub, missing.id, TERMINAL, timeout=120)
    assert (failed.state, failed.failure_reason) == (pb.JOB_STATE_FAILED, "image pull failed")
    assert "absent" in failed.hint or "not found" in failed.hint
