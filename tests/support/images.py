"""The test image: busybox from a root filesystem tarball (no registry is needed)."""

import io
import sys
import tarfile
from pathlib import Path

import docker

TEST_IMAGE = "hatrain-test/rootfs:1"
HOST_MOUNTS = ("/usr", "/lib", "/lib64", "/etc/ld.so.cache")


def rootfs_tar(extra: dict[str, bytes] | None = None) -> bytes:
    """A root filesystem: busybox, a few applets, /etc/passwd, and any extra files."""
    busybox = Path("/bin/busybox") if Path("/bin/busybox").exists() else Path("/usr/bin/busybox")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "workspace", "root", "dev", "proc", "sys", "run", "opt"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "cat", "echo", "sleep", "env", "ls", "mkdir", "rm"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        files = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", **(extra or {})}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ensure_test_image(client: docker.DockerClient) -> str:
    try:
        client.images.get(TEST_IMAGE)
        return TEST_IMAGE
    except docker.errors.ImageNotFound:
        pass
    client.api.import_image_from_data(rootfs_tar(), repository=TEST_IMAGE)
    return TEST_IMAGE


def python_mounts(*extra: Path) -> list[dict[str, object]]:
    """Read-only mounts that let a container run this Python and its virtualenv."""
    paths = [Path(p) for p in HOST_MOUNTS] + [Path(sys.base_prefix), Path(sys.prefix), *extra]
    return [
        {"source": str(p), "target": str(p), "read_only": True}
        for p in dict.fromkeys(paths)
        if p.exists()
    ]
