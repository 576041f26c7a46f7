"""deploy/Dockerfile builds (buildah, from Debian's packages), and the image holds what a
student's pod runs: vpnlab, jupyterhub, the course, the entry point, uid 1000.

No container registry is reached from the test machine, so the base image is made here:
debootstrap (Debian's packages, from the mirror of this machine's own apt sources) into a folder,
committed with ``buildah from scratch``. Everything, the storage of buildah included (``--root``,
``vfs``), is in a folder of the test's own and removed after: nothing stays on the host.
buildah, debootstrap and netavark are installed with apt-get on first use (about 15 s); the build
takes about 4 minutes and 2 GB of disk.

Not run here: the entry point's rootless lab *inside* a container. buildah's chroot isolation
forbids user namespaces to a chrooted process, and in a container of runc's defaults the holder
cannot mount /proc (the masked /proc that ``procMount: Unmasked`` of deploy/z2jh/values.yaml
lifts). The entry point is tested as a plain script instead (tests/lab/test_rootless.py).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import root_snapshot
from .users import REPO, made_folder

TOOLS = {"buildah": "buildah", "debootstrap": "debootstrap"}
NETAVARK = Path("/usr/lib/podman/netavark")
"""buildah's network helper, which it recommends: Debian 13's buildah does not start without it
(``buildah from``: could not find "netavark"), even with chroot isolation and no network."""
BASE = "localhost/vpnlab-base:bookworm"
IMAGE = "localhost/vpnlab-singleuser:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
NPROC = 32768
"""buildah 1.28's (Debian 12) own process limit in a RUN step, set before the configured ones."""


def ulimits() -> str:
    """The limits a RUN step gets: buildah 1.39 (Debian 13) raises open files and processes to
    1048576 unless told otherwise, which fails where the hard limits are lower (``setting
    "RLIMIT_NOFILE" ...: operation not permitted``); ours, and processes at most :data:`NPROC`
    (a step of buildah 1.28 may lower the limit, not raise it again)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = resource.getrlimit(resource.RLIMIT_NPROC)
    nproc = [NPROC if n == resource.RLIM_INFINITY else min(n, NPROC) for n in now]
    return f'"nofile={nofile[0]}:{nofile[1]}", "nproc={nproc[0]}:{nproc[1]}"'


def install_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    missing += [] if NETAVARK.exists() else ["netavark"]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    if done.returncode != 0:
        pytest.skip(f"apt-get could not install {missing}: {done.stderr.strip()[-200:]}")


def debian_mirror() -> str:
    """The first Debian mirror of this machine's apt sources (deb822 or one-line)."""
    texts = [p.read_text() for p in Path("/etc/apt").rglob("*.sources")]
    texts += [p.read_text() for p in Path("/etc/apt").rglob("*.list")]
    for text in texts:
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+)(\S+/debian)/?(?:\s|$)", text, re.M):
            return match.group(1)
    pytest.skip("no Debian mirror in /etc/apt (debootstrap needs one)")


@pytest.fixture(scope="module")
def buildah() -> Iterator[tuple[list[str], Path]]:
    """``buildah`` with its storage in a folder of the test's own, removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, buildah)")
    install_tools()
    before = root_snapshot()  # chroot isolation: no container network (no CNI bridge, no sysctl)
    with made_folder() as folder:
        if shutil.disk_usage(folder).free < 6 * 2**30:
            pytest.skip("less than 6 GiB free for the image build")
        storage = ["--root", str(folder / "storage"), "--runroot", str(folder / "run")]
        conf = folder / "containers.conf"
        conf.write_text(f"[containers]\ndefault_ulimits = [{ulimits()}]\n")
        env = ["env", f"CONTAINERS_CONF={conf}"]
        yield [*env, "buildah", *storage, "--storage-driver", "vfs"], folder
        argv = ["buildah", *storage, "--storage-driver", "vfs", "rm", "--all"]
        subprocess.run(argv, capture_output=True, timeout=120, check=False)
    assert root_snapshot() == before


def make_base(buildah: list[str], folder: Path) -> None:
    rootfs = folder / "rootfs"
    argv = ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ctr = run(buildah, "from", "scratch").strip()
    mount = run(buildah, "mount", ctr).strip()
    subprocess.run(["cp", "-a", f"{rootfs}/.", mount], check=True, timeout=300)
    run(buildah, "umount", ctr)
    run(buildah, "commit", "-q", ctr, BASE)
    run(buildah, "rm", ctr)
    shutil.rmtree(rootfs)


def run(buildah: list[str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [*buildah, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"buildah {args[0]}: {done.stderr[-3000:]}"
    return done.stdout


def test_the_image_builds_and_holds_the_course(buildah):
    tool, folder = buildah
    make_base(tool, folder)
    build = ["bud", "--isolation", "chroot", "--layers=false", "--build-arg", f"BASE={BASE}"]
    if HOST_CA.exists():  # a builder behind a TLS-terminating proxy: pip trusts what we trust
        build += ["--build-arg", "PIP_CERT=/run/host-ca/ca-certificates.crt"]
        build += ["--volume", f"{HOST_CA.parent}:/run/host-ca:ro"]
    build += ["-f", str(REPO / "deploy/Dockerfile"), "-t", IMAGE, str(REPO)]
    run(tool, *build, timeout=1500)
    config = json.loads(run(tool, "inspect", "--type", "image", IMAGE))["OCIv1"]["config"]
    assert config["Cmd"] == ["/opt/vpnlab/bin/vpnlab-start-singleuser"]
    assert config["User"] == "1000"
    ctr = run(tool, "from", IMAGE).strip()
    probe = (  # the student edition only: no solution in it, no instructor notebook anywhere
        "import jupyterhub, pyroute2, vpnlab, pathlib; "
        "c = list(pathlib.Path('/opt/vpnlab/course').glob('*.ipynb')); "
        "print(len(c), sum('BEGIN SOLUTION' in p.read_text() for p in c), "
        "len([p for d in ('/opt', '/home', '/srv', '/src', '/usr/local') "
        "for p in pathlib.Path(d).rglob('[0-9][0-9]_*') if p.parent.name != 'course']))"
    )
    out = run(tool, "run", "--isolation", "chroot", ctr, "--", "python", "-c", probe)
    count, solutions, instructor = map(int, out.split())
    assert count >= 15 and solutions == 0 and instructor == 0
    tools = "for t in unshare nsenter ip nft tshark dumpcap ping; do command -v $t; done"
    out = run(tool, "run", "--isolation", "chroot", ctr, "--", "sh", "-c", tools)
    assert len(out.split()) == 7
    help_ = run(tool, "run", "--isolation", "chroot", ctr, "--", "vpnlab", "rootless", "--help")
    assert "rootless run" in help_
