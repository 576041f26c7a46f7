"""The hub's spawner for a class on one server: LocalProcessSpawner, plus what a class needs.

- **A spawn that cannot start says why, at once.** :func:`check_student`, the hub's
  ``pre_spawn_hook`` (for this spawner and for SystemdSpawner), runs a check as the student
  (their uid, their groups) for what a student's server needs: a Unix account, a home folder,
  the install's Python and start script executable, the course readable. A failure raises
  :class:`SpawnRefused` with one sentence naming the path and the fix; JupyterHub logs it with
  the user's name ("Error starting alice's server: ...") and shows it on the spawn page ("Spawn
  failed: ...") within seconds, instead of a 60 s timeout after a bare ``Permission denied``.
- **Home folders 0700.** :func:`check_student` makes the student's home 0700 (Debian 12's
  default for new users; older accounts and other distributions have 0755, which lets every
  student read every other student's notebooks).
- **Limits per student** where systemd is not PID 1 (a container, this test machine): a cgroup
  v1 of the student's own in the memory, cpu and pids hierarchies, a child of the hub's own
  cgroup, with ``memory.limit_in_bytes``, ``cpu.cfs_quota_us`` and ``pids.max``; the server is
  put in it before it runs (``preexec_fn``, still root), so everything it starts (kernels, the
  rootless holder and every lab in it) is counted. Stopping the server kills what is left in
  the cgroup and removes it. Where systemd runs, jupyterhub_config.py uses SystemdSpawner
  instead (a transient unit per student with the same limits) and this class is not used.

The hub's side; of vpnlab only ``kill_all`` (the class install's venv has it, as the hub does).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from tornado import web
from traitlets import Integer

from vpnlab.course.classhub import kill_all

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("memory", "cpu", "pids")
CHECK_TIMEOUT_S = 10

CHECK_SCRIPT = r"""
for exe in "$@"; do
  case $exe in
    read:*) [ -r "${exe#read:}" ] && [ -x "${exe#read:}" ] \
              || { echo "cannot read ${exe#read:}"; exit 1; } ;;
    *) [ -x "$exe" ] || { echo "cannot run $exe"; exit 1; } ;;
  esac
done
"""
"""Run as the student: the first path they cannot run (or folder they cannot read), one line."""


class SpawnRefused(web.HTTPError):
    """A student's server cannot start: ``reason`` (and its fix) goes to the log and the page."""

    def __init__(self, reason: str) -> None:
        super().__init__(500, "%s", reason)
        self.jupyterhub_message = reason  # what the spawn page shows after "Spawn failed: "


def parse_bytes(text: str) -> int:
    """``512M``, ``2G``, ``1048576`` -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def own_cgroup(controller: str) -> Path:
    """The hierarchy ``controller``'s folder of this process's own cgroup (from /proc/self)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    raise SpawnRefused(f"no cgroup v1 {controller} hierarchy")


def cgroup_v1_available() -> bool:
    """True if the memory, cpu and pids hierarchies of cgroup v1 are mounted and writable."""
    return all(os.access(CGROUP_ROOT / c / "cgroup.procs", os.W_OK) for c in CGROUP_CONTROLLERS)


class StudentCgroup:
    """A student's cgroup in each v1 hierarchy: ``<hub's cgroup>/vpnlab-<user>``."""

    def __init__(self, user: str) -> None:
        self.folders = [own_cgroup(c) / f"vpnlab-{user}" for c in CGROUP_CONTROLLERS]

    def make(self, memory_bytes: int, cpu_percent: int, tasks: int) -> None:
        """Make the folders (a stale one of a crashed server is emptied first) and set limits."""
        self.remove()
        memory, cpu, pids = self.folders
        for folder in self.folders:
            folder.mkdir(exist_ok=True)
        if memory_bytes:
            (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        if cpu_percent:
            period = int((cpu / "cpu.cfs_period_us").read_text())
            (cpu / "cpu.cfs_quota_us").write_text(str(period * cpu_percent // 100))
        if tasks:
            (pids / "pids.max").write_text(str(tasks))

    def enter(self) -> None:
        """Put the calling process in every folder (in the child, before it drops root)."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.folders[2] / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self) -> None:
        """SIGKILL what is left in it, then remove the folders (a folder with tasks cannot go)."""
        kill_all(self.pids)
        for folder in self.folders:
            with contextlib.suppress(FileNotFoundError):
                folder.rmdir()


def check_student(spawner, readable: list[str]) -> None:
    """SpawnRefused (one sentence, with the fix) unless the student's server can start.

    Run as the hub's ``pre_spawn_hook``: the home folder made 0700, then, as the student, the
    spawner's command and ``VPNLAB_PYTHON`` executable and the ``readable`` folders readable.
    """
    name = spawner.user.name
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise SpawnRefused(
            f"there is no Unix user {name!r} on this server: the instructor makes one "
            f"(useradd -m {name}, see docs/class.md)"
        ) from None
    home = Path(account.pw_dir)
    if not home.is_dir():
        raise SpawnRefused(f"{name}'s home folder {home} does not exist (useradd -m)")
    if home.stat().st_mode & 0o077:
        home.chmod(0o700)  # other students must not read this one's work
        spawner.log.info("%s: home folder %s made 0700", name, home)
    python = spawner.environment.get("VPNLAB_PYTHON")
    programs = [spawner.cmd[0], *([python] if isinstance(python, str) else [])]
    argv = ["/bin/sh", "-c", CHECK_SCRIPT, "vpnlab-check", *programs]
    argv += [f"read:{path}" for path in readable]
    try:
        done = subprocess.run(
            argv,
            preexec_fn=set_user_setuid(name),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            env={"PATH": "/usr/bin:/bin"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SpawnRefused(f"the check as {name} took over {CHECK_TIMEOUT_S} s") from None
    if done.returncode != 0:
        why = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise SpawnRefused(
            f"{name} {why[0]}: the class install must be readable by every user "
            "(scripts/setup.sh --system puts it in /opt/vpnlab, mode 755, not in a home folder)"
        )


class VpnlabSpawner(LocalProcessSpawner):
    """LocalProcessSpawner with a cgroup per student (limits on memory, CPU and tasks)."""

    mem_limit_bytes = Integer(0, config=True, help="Memory per student, bytes (0: no limit).")
    cpu_limit_percent = Integer(0, config=True, help="CPU per student, % of one core (0: none).")
    tasks_limit = Integer(0, config=True, help="Processes and threads per student (0: none).")

    def _cgroup(self) -> StudentCgroup | None:
        limited = self.mem_limit_bytes or self.cpu_limit_percent or self.tasks_limit
        return StudentCgroup(self.user.name) if limited and cgroup_v1_available() else None

    async def start(self):
        cgroup = self._cgroup()
        if cgroup is not None:
            cgroup.make(self.mem_limit_bytes, self.cpu_limit_percent, self.tasks_limit)
            self.log.info(
                "%s: cgroup %s (memory %d B, cpu %d %%, tasks %d)",
                self.user.name,
                cgroup.folders[0].name,
                self.mem_limit_bytes,
                self.cpu_limit_percent,
                self.tasks_limit,
            )
        return await super().start()

    def make_preexec_fn(self, name):
        drop_root = set_user_setuid(name)
        cgroup = self._cgroup()

        def preexec() -> None:
            if cgroup is not None:
                cgroup.enter()
            drop_root()

        return preexec

    async def stop(self, now=False):
        await super().stop(now=now)
        cgroup = self._cgroup()
        if cgroup is not None:
            cgroup.remove()
