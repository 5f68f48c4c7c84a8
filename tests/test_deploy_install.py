"""deploy/install.sh in a fresh Debian root (a container of an imported Debian 12 rootfs, no
network), run from the files the README has the admin copy to the host: run twice it ends in the
same state; it adds no account (the agent runs as root); --uninstall removes what it added and
keeps the data root; --purge removes that too."""

import hashlib
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import CACHE, REPO, _fail_setup

DEBIAN_IMAGE = "hatrain-test/debian:12"
# Parts of the root that are the container's own, not the installation's.
_OUTSIDE = ("/proc", "/sys", "/dev", "/tmp", "/src", "/dist", "/wheelhouse")


@pytest.fixture(scope="session")
def debian_image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(DEBIAN_IMAGE)
    except docker.errors.ImageNotFound:
        _fail_setup(f"no {DEBIAN_IMAGE} image (a Debian 12 rootfs made with mmdebstrap)")
    return DEBIAN_IMAGE


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the dependencies' wheels, a directory with hatrain's wheel built from this checkout).
    The dependencies are downloaded here once (the container has no network)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha256("\n".join(deps).encode()).hexdigest()[:16]
    house = CACHE / "wheelhouse"
    marker = house / f".complete-{key}"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if not marker.exists():
        got = subprocess.run(
            [*pip, "download", "--only-binary=:all:", "-d", str(house), *deps],
            capture_output=True,
            text=True,
        )
        assert got.returncode == 0, f"pip download of the dependencies failed: {got.stderr}"
        marker.touch()
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    return house, dist


class Root:
    """A running container of the Debian image, the checkout and wheels mounted read-only."""

    def __init__(self, container: docker.models.containers.Container) -> None:
        self.container = container

    def run(self, command: str) -> tuple[int, str]:
        code, output = self.container.exec_run(["bash", "-c", command])
        return int(code), output.decode(errors="replace")

    def copy_in(self) -> None:
        """What the README has the admin copy to the host's /tmp: the wheel, agent.yml, the
        unit and install.sh, side by side."""
        code, out = self.run(
            "mkdir /tmp/setup && cp /dist/hatrain-*.whl /src/configs/agent.yml "
            "/src/deploy/hatrain-agent.service /src/deploy/install.sh /tmp/setup/"
        )
        assert code == 0, out

    def install(self, *args: str) -> tuple[int, str]:
        return self.run("bash /tmp/setup/install.sh --wheelhouse /wheelhouse " + " ".join(args))

    def state(self) -> tuple[list[str], list[str], list[str]]:
        """(every path with its type, owner, group, mode and, for files, size; the accounts; the
        groups with their members)."""
        prune = " -o ".join(f"-path {p}" for p in _OUTSIDE)
        code, listing = self.run(
            f"find / -xdev \\( {prune} \\) -prune -o -printf '%p\\t%y\\t%u\\t%g\\t%m\\t%s\\n'"
        )
        assert code == 0, listing
        paths = []
        for line in sorted(listing.splitlines()):
            path, kind, user, group, mode, size = line.split("\t")
            if path in _OUTSIDE:
                continue
            paths.append("\t".join([path, kind, user, group, mode] + [size] * (kind == "f")))
        _, accounts = self.run("getent passwd | cut -d: -f1,3,4,6,7 | sort")
        _, groups = self.run("getent group | cut -d: -f1,4 | sort")
        return paths, accounts.splitlines(), groups.splitlines()


@pytest.fixture
def root(
    debian_image: str, wheelhouse: tuple[Path, Path], docker_client: docker.DockerClient
) -> Iterator[Root]:
    house, dist = wheelhouse
    container = docker_client.containers.run(
        debian_image,
        ["sleep", "infinity"],
        detach=True,
        network_mode="none",
        labels={"hatrain-test": "install"},
        volumes={
            str(REPO): {"bind": "/src", "mode": "ro"},
            str(house): {"bind": "/wheelhouse", "mode": "ro"},
            str(dist): {"bind": "/dist", "mode": "ro"},
        },
    )
    try:
        found = Root(container)
        found.copy_in()
        yield found
    finally:
        container.remove(force=True)


def _added(before: list[str], after: list[str]) -> list[str]:
    return sorted(set(after) - set(before))


def test_install_twice_is_one_install_and_uninstall_removes_it(root: Root) -> None:
    """In a fresh Debian 12 root without network: the first run installs the venv, the link,
    the data root (root's, 0711) and the runtime dir (root's, 0755), the config and the unit
    (which runs the agent as root, with no capabilities handed down), and adds no account; then
    it runs doctor (which finds no Docker engine here: exit 3, said so). The second run changes
    nothing (every path, owner, mode, size, account and group the same). --uninstall leaves the
    root as it was but for the data root with what the agent wrote there; --purge removes that
    too."""
    before = root.state()
    paths0 = before[0]

    code, out = root.install()
    assert code == 3, out
    assert "cannot reach the Docker engine" in out and "doctor reports problems" in out, out
    assert "data root" in out and "/var/lib/hatrain" in out
    first = root.state()
    assert first[1:] == before[1:], "no account or group added"
    added = _added(paths0, first[0])
    by_path = {line.split("\t")[0]: line.split("\t")[1:] for line in added}
    assert by_path["/var/lib/hatrain"] == ["d", "root", "root", "711"]
    assert by_path["/run/hatrain"] == ["d", "root", "root", "755"]
    assert by_path["/etc/hatrain/agent.yml"][:4] == ["f", "root", "root", "644"]
    unit = by_path["/etc/systemd/system/hatrain-agent.service"]
    assert unit[:4] == ["f", "root", "root", "644"]
    code, text = root.run("cat /etc/systemd/system/hatrain-agent.service")
    assert code == 0 and "\nUser=root\n" in text and "\nNoNewPrivileges=true\n" in text, text
    assert "AmbientCapabilities" not in text, "a capability a job's process would inherit"
    assert by_path["/usr/local/bin/hatrain-agent"][0] == "l"
    assert "/opt/hatrain/venv/bin/hatrain-agent" in by_path
    code, out = root.run("/usr/local/bin/hatrain-agent --version")
    assert code == 0 and "version" in out, out
    # Nothing the installer added may be written by others (the venv and link run as root).
    writable = [p for p, v in by_path.items() if v[0] != "l" and int(v[3], 8) & 0o002]
    assert writable == [], writable

    code, out = root.install()
    assert code == 3, out
    second = root.state()
    assert _added(first[0], second[0]) == [] and _added(second[0], first[0]) == []
    assert second == first

    code, out = root.run("touch /var/lib/hatrain/hatrain.db")  # what the agent would write
    assert code == 0, out
    code, out = root.install("--uninstall")
    assert code == 0, out
    assert "kept the data root /var/lib/hatrain" in out, out
    paths, *accounts = root.state()
    kept = [p for p in paths if p.startswith("/var/lib/hatrain")]
    assert [p.split("\t")[0] for p in kept] == ["/var/lib/hatrain", "/var/lib/hatrain/hatrain.db"]
    assert sorted(set(paths) - set(kept)) == paths0
    assert accounts == list(before[1:])

    code, out = root.install("--uninstall", "--purge")
    assert code == 0, out
    assert root.state() == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ("--user hatrain", "--user: there is no service account to name"),
        ("--data-root /tmp/hatrain", "/tmp is not root's alone"),
        ("--data-root /srv/team/hatrain", "/srv/team is not root's alone"),
        ("--data-root /", "--data-root must be an absolute path other than /"),
        ("--data-root var/lib/hatrain", "--data-root must be an absolute path other than /"),
    ],
)
def test_bad_options_are_refused_and_change_nothing(root: Root, args: str, says: str) -> None:
    """A --user (there is no service account) and a data root that is not safe for a root agent
    (a parent another account may write: it could swap the data root for a link; / itself; a
    relative path) are refused with exit 2, saying why, before anything is installed."""
    code, out = root.run("mkdir -m 0755 /srv/team && chown nobody /srv/team")
    assert code == 0, out
    before = root.state()
    code, out = root.install(args)
    assert code == 2, out
    assert says in out, out
    assert root.state() == before
