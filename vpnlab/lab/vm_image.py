"""A kernel with ESP for the lab: Debian's stock kernel and an initramfs, built once, cached.

The host's kernel may lack what the lab wants to show (ESP and its ciphers in xfrm: the CI
machine's has none and loads no modules). Debian's stock kernel has them all as modules, and
it boots in QEMU. This module makes the two files QEMU needs, from Debian packages only:

    linux-image-amd64        apt-get download (the metapackage names the real one), then
                             dpkg-deb -x: vmlinuz, and the modules we load (their
                             dependencies read from each module's own ``depends=``)
    busybox-static           apt-get download, dpkg-deb -x: one static binary for /init

The initramfs (a newc cpio, written here) holds busybox, the modules in load order and
``/init``. Everything else the VM runs (``ip``, ``ping``, Python and vpnlab) is the host's
own, read over a read-only 9p share of ``/`` (``vm.py``): no copies of binaries and their
libraries that could drift from the host's.

The result is cached in ``~/.cache/vpnlab/vm/<key>/`` (``$XDG_CACHE_HOME``, or
``$VPNLAB_VM_CACHE``), the key naming both package versions and a hash of /init and the
module list, so a new kernel or a changed /init builds a new image and an unchanged one is
reused: the first build takes a few seconds (a 70 MB download from the Debian mirror).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vpnlab.core.errors import LabError

KERNEL_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"

MODULES = (
    "virtio_pci",  # the machine's devices
    "virtio_net",
    "9pnet_virtio",  # the host's / and the work folder
    "9p",
    "tun",  # vpnlab's tun0 inside the VM
    "dummy",  # the kernel peer's tunnel address
    "xfrm_user",  # ip xfrm (netlink)
    "esp4",  # ESP, and ESP in UDP (RFC 3948)
    "gcm",  # rfc4106(gcm(aes))
    "ghash-generic",
    "ctr",
    "authenc",  # cipher_null + hmac(sha256) (esp-null); both built in
    "seqiv",  # its IVs: a salt from the default RNG (drbg, which tests itself with sha512)
    "sha512_generic",
    "jitterentropy_rng",
    "drbg",
    "echainiv",
)
"""What /init loads, in this order after each one's dependencies."""

INIT = r"""#!/bin/busybox sh
# vpnlab's kernel VM (vpnlab/lab/vm_image.py): modules, the host's / read-only at /host, then
# a command loop on the second serial port (vm.py speaks its protocol).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod /modules/$m.ko || echo "vpnlab-vm: insmod $m failed"; done
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host
# $vmkeep: host folders under /tmp or /run the VM must still see (a checkout or a venv there),
# held aside before the VM's own /tmp and /run cover them, then put back at the same path
i=0
for keep in $(echo "$vmkeep" | tr ',' ' '); do
  mkdir -p /keep/$i && mount -o bind "/host$keep" /keep/$i
  i=$((i + 1))
done
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
i=0
for keep in $(echo "$vmkeep" | tr ',' ' '); do
  mkdir -p "/host$keep" && mount -o move /keep/$i "/host$keep"
  i=$((i + 1))
done
if [ -n "$vmwork" ]; then
  mkdir -p "/host$vmwork" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work "/host$vmwork"
fi
ip link set lo up
# Open the port once: input that arrives while no one holds it open is lost.
exec 0</dev/ttyS1 1>/dev/ttyS1
stty raw -echo
echo "vpnlab-vm ready $(uname -r)"
# Each request: "ID BASE64-OF-A-SHELL-SCRIPT"; the script runs in the host's userland
# (chroot /host); the answer: "BEGIN ID", its output in base64, "END ID EXIT-STATUS".
while read -r id script; do
  echo "$script" | base64 -d > /host/tmp/vpnlab-vm.sh
  chroot /host /bin/sh /tmp/vpnlab-vm.sh > /tmp/out 2>&1 < /dev/null
  rc=$?
  echo "BEGIN $id"
  base64 /tmp/out
  echo "END $id $rc"
done
poweroff -f
"""


@dataclass(frozen=True, slots=True)
class VmImage:
    """The files QEMU boots: Debian's kernel and our initramfs."""

    kernel: Path
    initramfs: Path
    release: str
    """The kernel's release (``uname -r`` in the VM), e.g. ``6.1.0-57-amd64``."""


def cache_root() -> Path:
    """Where images are kept: ``$VPNLAB_VM_CACHE``, else ``$XDG_CACHE_HOME/vpnlab/vm``."""
    if os.environ.get("VPNLAB_VM_CACHE"):
        return Path(os.environ["VPNLAB_VM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vpnlab" / "vm"


def candidate(package: str) -> str:
    """The version apt would install of ``package`` (from the local package lists).

    Raises:
        LabError: apt does not know it (no apt-get, or apt-get update never ran).
    """
    try:
        out = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", package],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError:
        raise LabError("building the kernel VM needs apt (Debian or Ubuntu)") from None
    found = re.search(r"^Version: (\S+)$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or found is None:
        raise LabError(f"apt knows no {package}: run apt-get update")
    return found.group(1)


def distribution() -> str:
    """This machine's distribution as /etc/os-release names it (``ID``): debian, ubuntu, ..."""
    try:
        return platform.freedesktop_os_release().get("ID", "unknown")
    except OSError:
        return "unknown"


def kernel_package() -> str:
    """The real kernel package the metapackage depends on, e.g. linux-image-6.1.0-57-amd64.

    Raises:
        LabError: apt does not know :data:`KERNEL_PACKAGE`; off Debian it never will (Ubuntu's
            kernels are other packages, their modules compressed: not what this module reads).
    """
    try:
        version = candidate(KERNEL_PACKAGE)
    except LabError:
        if distribution() == "debian":
            raise
        raise LabError(
            f"the kernel VM is built from Debian's {KERNEL_PACKAGE}, which apt on "
            f"{distribution()} does not have: it runs on Debian only (docs/kernel.md)"
        ) from None
    out = subprocess.run(
        ["apt-cache", "show", f"{KERNEL_PACKAGE}={version}"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    found = re.search(r"^Depends: .*?(linux-image-[0-9][^\s,]*)", out, re.MULTILINE)
    if found is None:
        raise LabError(f"cannot tell which kernel {KERNEL_PACKAGE} {version} depends on")
    return found.group(1)


def image_key(kernel: str, kernel_version: str, busybox_version: str) -> str:
    """The cache folder's name: both packages' versions and a hash of what we put in."""
    recipe = hashlib.sha256((INIT + " ".join(MODULES)).encode()).hexdigest()[:12]
    name = f"{kernel}_{kernel_version}+busybox_{busybox_version}+{recipe}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def build_image(cache: Path | None = None) -> VmImage:
    """The VM's kernel and initramfs: from the cache, or built once from Debian packages.

    Raises:
        LabError: apt or dpkg-deb missing, a download failed, or a module is not found.
    """
    kernel = kernel_package()
    key = image_key(kernel, candidate(kernel), candidate(BUSYBOX_PACKAGE))
    folder = (cache or cache_root()) / key
    image = VmImage(
        folder / "vmlinuz", folder / "initramfs.cpio", kernel.removeprefix("linux-image-")
    )
    if image.kernel.exists() and image.initramfs.exists():
        return image
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        for package in (kernel, BUSYBOX_PACKAGE):
            unpack(download(package, work), tree)
        staged = work / "image"
        staged.mkdir()
        shutil.copyfile(tree / "boot" / f"vmlinuz-{image.release}", staged / "vmlinuz")
        files = initramfs_files(tree, image.release)
        (staged / "initramfs.cpio").write_bytes(newc_archive(files))
        if not folder.exists():  # another build may have finished first: keep its image
            staged.rename(folder)
    return image


def download(package: str, folder: Path) -> Path:
    """``apt-get download package`` into ``folder``; the .deb's path."""
    done = subprocess.run(
        ["apt-get", "download", "-q", package],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        reason = (done.stderr.strip().splitlines() or ["no .deb"])[-1]
        raise LabError(f"apt-get download {package} failed: {reason}")
    return debs[0]


def unpack(deb: Path, tree: Path) -> None:
    """``dpkg-deb -x``: the package's files under ``tree`` (nothing is installed)."""
    done = subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()}")


def in_tree(tree: Path, path: str) -> Path:
    """``path`` in an unpacked package: where Debian 12 ships it (``bin/``, ``lib/``) or under
    ``usr/``, where Debian 13's merged /usr put it."""
    merged = tree / "usr" / path
    return merged if merged.exists() else tree / path


def module_name(path: Path) -> str:
    """The module a file holds, as modinfo spells it: ``ghash-generic.ko.xz`` -> ghash_generic."""
    return path.name.removesuffix(".xz").removesuffix(".ko").replace("-", "_")


def module_bytes(path: Path) -> bytes:
    """A module file's contents, uncompressed (Debian 13 ships them xz-compressed)."""
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data


def module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The module files (``.ko``, ``.ko.xz``) for ``wanted`` and their dependencies, each after
    what it needs.

    The dependencies come from each module's ``.modinfo`` (``depends=a,b``), what depmod
    reads too; a module the kernel has built in has no file and needs none.
    """
    found = [*modules_dir.rglob("*.ko"), *modules_dir.rglob("*.ko.xz")]
    files = {module_name(path): path for path in found}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in files:
            builtin = (modules_dir / "modules.builtin").read_text()
            if re.search(rf"/{re.escape(name)}\.ko$", builtin.replace("-", "_"), re.MULTILINE):
                return
            raise LabError(f"the kernel has no module {name}")
        info = re.search(rb"\x00depends=([^\x00]*)\x00", module_bytes(files[name]))
        for dep in info.group(1).decode().split(",") if info else []:
            if dep:
                visit(dep)
        order.append(files[name])

    for name in wanted:
        visit(name)
    return order


def initramfs_files(tree: Path, release: str) -> dict[str, tuple[int, bytes]]:
    """The initramfs's files: path -> (mode, contents); folders have mode 0o040755."""
    folder = 0o040755
    files: dict[str, tuple[int, bytes]] = {
        d: (folder, b"") for d in ("bin", "dev", "proc", "sys", "tmp", "host", "modules")
    }
    files["bin/busybox"] = (0o100755, in_tree(tree, "bin/busybox").read_bytes())
    files["init"] = (0o100755, INIT.encode())
    names = []
    for path in module_order(in_tree(tree, f"lib/modules/{release}"), MODULES):
        name = path.name.removesuffix(".xz").removesuffix(".ko")
        files[f"modules/{name}.ko"] = (0o100644, module_bytes(path))
        names.append(name)
    files["modules/order"] = (0o100644, ("\n".join(names) + "\n").encode())
    return files


def newc_archive(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks as its initramfs."""
    out = bytearray()
    for ino, (name, (mode, data)) in enumerate([*files.items(), ("TRAILER!!!", (0, b""))], 1):
        encoded = name.encode() + b"\x00"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\x00" * (-len(out) % 4) + data
        out += b"\x00" * (-len(out) % 4)
    return bytes(out)
