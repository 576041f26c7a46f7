"""A QEMU VM with Debian's kernel as a lab node: the kernel's own ESP where the host has none.

    [lab node's namespace]  vmtap (TAP, HOST_ADDR/30) <-- qemu -netdev tap --> VM eth0 (VM_ADDR)

QEMU runs inside a lab namespace (``ip netns exec``), with a TAP device made there: the VM is
one more host on a /30 beside that node, never linked to the root namespace and with no
user-mode network to the outside. TCG only (``-accel tcg``): KVM here may be ``kvm_pvm``,
which hangs a stock kernel.

The VM's userland is the host's: ``/`` shared read-only over 9p, and ``vm.run(script)`` runs a
shell script there (chroot) through the second serial port (the protocol is /init's, in
``vm_image.py``), so ``ip xfrm``, ``ping`` and ``python -m vpnlab`` are the host's own
programs on the VM's kernel. A work folder of the host is shared writable at the same path
(key files in, logs out). The VM has its own /tmp and /run; a checkout or a venv of the host
under them stays visible at its path (``kept_folders``). The first serial port is the kernel's
console, kept in the work folder (``console.log``) for when the boot fails.

Every wait is bounded: boot (``BOOT_TIMEOUT_S``) and each command (its ``timeout_s``).
:meth:`KernelVM.close` (also on failure: use ``with``) kills QEMU and removes the TAP.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vpnlab.core.errors import LabError
from vpnlab.lab.vm_image import VmImage

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT_S = 180.0
"""Boot to the command loop: about 12 s alone under TCG, far more on a loaded shared machine."""
COMMAND_TIMEOUT_S = 180.0
"""A command's default bound: a few seconds alone, far more when 8 people share 2 cores."""
TAP = "vmtap"
HOST_ADDR = "203.0.113.129"
VM_ADDR = "203.0.113.130"
PREFIX_LEN = 30
"""The node <-> VM link: a /30 of the lab's internet (TEST-NET-3), beside web's /24 routes."""
MEMORY_MB = 512


COVERED = (Path("/tmp"), Path("/run"))
"""The host folders the VM covers with its own (tmpfs): /init writes there."""


def kept_folders() -> list[Path]:
    """The folders under ``COVERED`` that the VM must still see: this checkout of vpnlab and
    the Python environment that runs it (``python -m vpnlab`` in the VM is the host's).

    Raises:
        LabError: such a folder's path has a comma or white space (the kernel's command line
            carries the list).
    """
    checkout = Path(__file__).resolve().parents[2]  # vpnlab/lab/vm.py
    wanted = {checkout, Path(sys.prefix).resolve()}
    wanted.add(Path(sys.base_prefix).resolve())
    under = sorted(p for p in wanted if any(p.is_relative_to(c) and p != c for c in COVERED))
    kept = [p for p in under if not any(p != q and p.is_relative_to(q) for q in under)]
    for path in kept:
        if any(c.isspace() or c == "," for c in str(path)):
            raise LabError(f"the kernel VM cannot share {path}: no commas or spaces in its path")
    return kept


@dataclass(frozen=True, slots=True)
class VmResult:
    """A script's exit status and its output (stdout and stderr together)."""

    returncode: int
    output: str


class KernelVM:
    """Debian's kernel in QEMU, joined to one lab namespace; a context manager."""

    def __init__(self, image: VmImage, namespace: str, work: Path) -> None:
        self.image, self.namespace, self.work = image, namespace, work
        self.qemu: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.buffer = b""
        self.ids = itertools.count(1)
        self.release = ""
        self.boot_s = 0.0

    def __enter__(self) -> KernelVM:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Make the TAP in the namespace, start QEMU there, wait for /init's command loop.

        Raises:
            LabError: no QEMU, the TAP cannot be made, or the VM does not come up in time.
        """
        if shutil.which(QEMU) is None:
            raise LabError(f"no {QEMU}: apt-get install qemu-system-x86 (scripts/setup.sh test)")
        self.work.mkdir(parents=True, exist_ok=True)
        self.netns("ip", "tuntap", "add", "dev", TAP, "mode", "tap")
        self.netns("ip", "addr", "add", f"{HOST_ADDR}/{PREFIX_LEN}", "dev", TAP)
        self.netns("ip", "link", "set", TAP, "up")
        socket_path = self.work / "control.sock"
        socket_path.unlink(missing_ok=True)
        started = time.monotonic()
        self.qemu = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *self.qemu_argv(socket_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.work / "qemu.log", "wb"),  # noqa: SIM115 (the child keeps it)
            start_new_session=True,
        )
        self.control = self.connect(socket_path, started + 30)
        line = self.read_line(started + BOOT_TIMEOUT_S)
        if not line.startswith("vpnlab-vm ready"):
            raise LabError(f"the VM said {line!r} instead of ready{self.console_tail()}")
        self.release = line.split()[-1]
        self.boot_s = time.monotonic() - started
        self.must(f"ip addr add {VM_ADDR}/{PREFIX_LEN} dev eth0 && ip link set eth0 up")

    def qemu_argv(self, socket_path: Path) -> list[str]:
        """QEMU's command line: TCG, no default devices, two serial ports, a TAP, two 9p shares."""
        append = f"console=ttyS0 panic=-1 random.trust_cpu=on vmwork={self.work}"
        if keep := kept_folders():
            append += f" vmkeep={','.join(map(str, keep))}"
        return [
            QEMU,
            *("-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", str(MEMORY_MB)),
            *("-nodefaults", "-display", "none", "-no-reboot"),
            *("-kernel", str(self.image.kernel), "-initrd", str(self.image.initramfs)),
            *("-append", append),
            *("-serial", f"file:{self.work / 'console.log'}"),
            *("-chardev", f"socket,id=control,path={socket_path},server=on,wait=on"),
            *("-serial", "chardev:control"),
            *("-netdev", f"tap,id=net0,ifname={TAP},script=no,downscript=no"),
            *("-device", "virtio-net-pci,netdev=net0"),
            *("-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"),
            *("-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"),
            *("-fsdev", f"local,id=work,path={self.work},security_model=none"),
            *("-device", "virtio-9p-pci,fsdev=work,mount_tag=work"),
        ]

    def connect(self, path: Path, deadline: float) -> socket.socket:
        """Connect to QEMU's control socket (QEMU waits for us before it boots the VM)."""
        while True:
            if self.qemu is not None and self.qemu.poll() is not None:
                raise LabError(f"qemu exited at once: {self.qemu_log()}")
            with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
                control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                control.connect(str(path))
                return control
            if time.monotonic() > deadline:
                raise LabError("qemu did not open its control socket")
            time.sleep(0.1)

    def read_line(self, deadline: float) -> str:
        """The next line from the VM's control port (raises LabError at ``deadline``)."""
        assert self.control is not None
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"the VM did not answer in time{self.console_tail()}")
            self.control.settimeout(min(left, 1.0))
            try:
                chunk = self.control.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise LabError(f"the VM's control port closed{self.console_tail()}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace").strip()

    def run(self, script: str, timeout_s: float = COMMAND_TIMEOUT_S) -> VmResult:
        """Run a shell script in the VM (the host's userland on the VM's kernel).

        Raises:
            LabError: no answer within ``timeout_s`` (the VM is then of no further use).
        """
        assert self.control is not None, "start() first"
        request = next(self.ids)
        encoded = base64.b64encode(script.encode()).decode()
        self.control.sendall(f"{request} {encoded}\n".encode())
        deadline = time.monotonic() + timeout_s
        while self.read_line(deadline) != f"BEGIN {request}":
            pass  # what an earlier, abandoned request left
        lines = []
        while not (line := self.read_line(deadline)).startswith(f"END {request} "):
            lines.append(line)
        output = base64.b64decode("".join(lines)).decode(errors="replace")
        return VmResult(int(line.split()[-1]), output)

    def must(self, script: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """:meth:`run`, raising LabError with the output unless the script exits 0."""
        result = self.run(script, timeout_s)
        if result.returncode != 0:
            raise LabError(f"in the VM: {script!r} failed: {result.output.strip()}")
        return result.output

    def netns(self, *argv: str) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise LabError(f"{' '.join(argv)} in {self.namespace}: {done.stderr.strip()}")

    def qemu_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.work / "qemu.log").read_text(errors="replace").strip()[-500:]
        return ""

    def console_tail(self, lines: int = 15) -> str:
        """The last lines of the VM's console and of QEMU's stderr, for an error message."""
        with contextlib.suppress(OSError):
            text = (self.work / "console.log").read_text(errors="replace").splitlines()
            return "\n  console: " + "\n  console: ".join(text[-lines:]) + "\n" + self.qemu_log()
        return ""

    def close(self) -> None:
        """Stop QEMU (TERM, then KILL) and remove the TAP; safe to call twice."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.qemu is not None and self.qemu.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.qemu.send_signal(signal.SIGTERM)
            try:
                self.qemu.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.qemu.kill()
                self.qemu.wait(timeout=10)
        self.qemu = None
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, "ip", "link", "del", TAP],
            capture_output=True,
        )
