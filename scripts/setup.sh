#!/usr/bin/env bash
# Installs what vpnlab needs on a Debian/Ubuntu machine: Debian packages and a virtual
# environment (.venv) with the package and its Python dependencies. Safe to run again: it only
# installs what is missing. Sourced by netns-lab.sh and test.sh; also runnable on its own.
set -euo pipefail

VPNLAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$VPNLAB_ROOT/.venv"
DEB_PACKAGES=(iproute2 nftables tshark tcpdump iperf3 conntrack procps iputils-ping iputils-arping curl
  python3-venv)
# Only for the tests (`setup.sh test`, or any set with dev): Debian's kernel in QEMU as the ESP peer where the host's
# kernel has none (tests/lab/test_kernel_vm.py; the kernel and busybox packages themselves are
# downloaded, not installed, into a cache by vpnlab/lab/vm_image.py).
TEST_DEB_PACKAGES=(qemu-system-x86)

# Progress and errors go to stderr, so that stdout is only the output of the command run
# (`netns-lab.sh exec r1 ip route > routes.txt`); bold only when stderr is a terminal.
say() {
  if [ -t 2 ]; then
    printf '\033[1m[vpnlab]\033[0m %s\n' "$*" >&2
  else
    printf '[vpnlab] %s\n' "$*" >&2
  fi
}
die() { printf '[vpnlab] error: %s\n' "$*" >&2; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "this needs root (namespaces, tun0, nftables): run it with sudo"
}

missing_debian_packages() {  # the DEB_PACKAGES not installed, one a line
  local p
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# Without root (a rootless lab, vpnlab/lab/rootless.py): apt-get is the one step that needs root,
# once; everything else (the venv, the lab, the notebooks) is the user's own.
check_debian_packages() {
  local missing
  missing=$(missing_debian_packages | tr '\n' ' ')
  [ -z "$missing" ] && { say "Debian packages: all present"; return; }
  die "missing Debian packages; install them once (the only step that needs root): sudo apt-get install -y --no-install-recommends ${missing% }"
}

install_debian_packages() {
  local missing=() p
  mapfile -t missing < <(missing_debian_packages)
  [ ${#missing[@]} -eq 0 ] && { say "Debian packages: all present"; return; }
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
  say "Debian packages: installing ${missing[*]} (apt-get, a minute or two)"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; we always capture as root: answer no.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q 2>&1 | tail -n 1 >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" 2>&1 \
    | grep -E '^(Setting up|E:)' | sed 's/^/    /' >&2 || true
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || die "apt-get could not install $p"
  done
}

pick_python() {
  local py
  for py in python3.13 python3.12 python3.11 python3.10 python3; do
    if command -v "$py" >/dev/null && "$py" -c \
      'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] < (3, 14)))' 2>/dev/null; then
      echo "$py"; return
    fi
  done
  die "vpnlab needs Python 3.10 to 3.13 (pyshark does not run on 3.14 yet)"
}

# The extras a command needs, as a sorted comma list (`test` is all three; none: the VPN alone):
#   netns-lab.sh         (none)             the lab and its proof: the daemons, who-am-I, pings
#   netns-lab.sh notebook, bench.sh, meltdown.sh, make-captures.sh   course
#   docs.sh              course,dev         the course website (Sphinx, myst-nb; the notebooks)
#   test.sh              course,dev,hub     the whole suite, the linters, the website's check
normalise_extras() {
  local IFS=, e out=()
  for e in $1; do
    case "$e" in
      "") ;;
      test) out+=(course dev hub) ;;
      *) out+=("$e") ;;
    esac
  done
  [ ${#out[@]} -gt 0 ] && printf '%s\n' "${out[@]}" | sort -u | paste -sd, -
  return 0
}

# create_venv [EXTRAS]: vpnlab with EXTRAS (comma separated) in .venv. Up to date when the stamp
# has this pyproject.toml's hash and at least these extras: a venv made by test.sh serves
# netns-lab.sh as it is, and one made by netns-lab.sh gets only the extras it lacks added.
create_venv() {
  local stamp="$VENV/.vpnlab-installed" digest had extras
  digest=$(sha256sum "$VPNLAB_ROOT/pyproject.toml" | cut -c1-16)
  had=$(cat "$stamp" 2>/dev/null || true)
  extras=$(normalise_extras "${1:-}")
  if [ -x "$VENV/bin/python" ] && [ "${had:0:16}" = "$digest" ]; then
    local missing
    missing=$(comm -23 <(tr , '\n' <<<"$extras" | sed '/^$/d') \
      <(normalise_extras "${had:16}" | tr , '\n' | sed '/^$/d'))
    [ -z "$missing" ] && { say "Python environment: $VENV is up to date"; return; }
  fi
  [ -x "$VENV/bin/python" ] && extras=$(normalise_extras "$extras,${had:16}")  # keep what it has
  if [ ! -x "$VENV/bin/python" ]; then
    local py; py=$(pick_python)
    say "Python environment: creating $VENV with $($py --version)"
    "$py" -m venv "$VENV" || die "could not create $VENV ($py -m venv failed)"
  fi
  say "Python environment: installing vpnlab${extras:+[$extras]} and its dependencies (pip)"
  local log="$VENV/pip.log"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip \
      && "$VENV/bin/python" -m pip install -e "$VPNLAB_ROOT${extras:+[$extras]}"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "pip could not install vpnlab's Python dependencies (full log: $log)"
  fi
  echo "$digest$extras" > "$stamp"
}

# JupyterHub's proxy (deploy/jupyterhub/, tests/lab/test_jupyterhub.py): configurable-http-proxy
# from npm into .venv/hub/ (a few seconds). Without npm: one line, and the hub test is skipped.
install_hub_proxy() {
  local bin="$VENV/hub/node_modules/.bin/configurable-http-proxy"
  [ -x "$bin" ] && { say "configurable-http-proxy: present"; return; }
  if ! command -v npm >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "configurable-http-proxy: installing npm first (apt-get, a minute or two)"
    apt-get update -q 2>&1 | tail -n 1 >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm 2>&1 \
      | grep -E '^E:' >&2 || true
  fi
  if ! command -v npm >/dev/null; then
    say "configurable-http-proxy: no npm (apt-get install npm); the JupyterHub test is skipped"
    return
  fi
  say "configurable-http-proxy: installing into $VENV/hub (npm)"
  mkdir -p "$VENV/hub"
  npm install --no-audit --no-fund --prefix "$VENV/hub" configurable-http-proxy@5 \
    >"$VENV/hub/npm.log" 2>&1 || { tail -n 5 "$VENV/hub/npm.log" >&2; die "npm failed"; }
}

# setup [EXTRAS]: everything, in order (as root: apt-get too; as a user: only the venv). One
# setup of a checkout at a time: two commands run at once in a fresh clone both created .venv,
# and one found it without pip. The lock is the checkout folder itself (flock(1), util-linux),
# so no lock file is left; it is let go when setup is done.
setup() {
  local lock
  exec {lock}<"$VPNLAB_ROOT"
  if ! flock -n "$lock"; then
    say "Setup: waiting for another command's setup of $VPNLAB_ROOT"
    flock "$lock"
  fi
  case ",${1:-}," in *,test,* | *,dev,*) DEB_PACKAGES+=("${TEST_DEB_PACKAGES[@]}") ;; esac
  if [ "$(id -u)" -eq 0 ]; then install_debian_packages; else check_debian_packages; fi
  create_venv "${1:-}"
  case ",${1:-}," in *,hub,*) install_hub_proxy ;; esac
  exec {lock}<&-
}

# --- the class install (docs/class.md): one copy every user can run, outside anyone's home ---
#
# setup.sh --system builds, as root, at $VPNLAB_SYSTEM_PREFIX (default /opt/vpnlab), all of it
# readable and runnable by every user and writable by root alone:
#   venv/      vpnlab installed from this checkout (not editable: nobody needs the checkout
#              after), with the course and hub extras, jupyterhub-idle-culler,
#              jupyterhub-systemdspawner (where systemd runs) and the LMS
#              logins (jupyterhub-ltiauthenticator, oauthenticator: deploy/jupyterhub/auth_*.py)
#   proxy/     configurable-http-proxy (npm)
#   course/    the student edition of the notebooks (scripts/student-edition.sh), nothing else
#   bin/vpnlab-start-singleuser   a student's server (deploy/start-singleuser.sh)
#   jupyterhub/                   the hub's config (deploy/jupyterhub/*.py)
# The instructor notebooks and their solutions are not copied anywhere under it.
SYSTEM_PREFIX=${VPNLAB_SYSTEM_PREFIX:-/opt/vpnlab}
SYSTEM_EXTRAS=course,hub
SYSTEM_PACKAGES=(jupyterhub-idle-culler jupyterhub-systemdspawner jupyterhub-ltiauthenticator
  oauthenticator)

# The files pip builds the package from, copied out of the checkout into a new folder (printed).
# Built in the checkout itself, setuptools would leave build/ and vpnlab.egg-info there, owned by
# root, and ship whatever build/lib holds: also a module that an older checkout had and this one
# deleted, after `git pull` (a course update, docs/class.md step 7).
package_sources() {
  local src
  src=$(mktemp -d) || die "could not make a folder for the package's sources (mktemp -d)"
  tar -C "$VPNLAB_ROOT" --exclude=__pycache__ -cf - pyproject.toml README.md vpnlab \
    | tar -C "$src" -xf - || { rm -rf "$src"; die "could not copy the package's sources"; }
  echo "$src"
}

system_venv() {
  local venv="$SYSTEM_PREFIX/venv" py log="$SYSTEM_PREFIX/pip.log" again=() src installed
  if [ -x "$venv/bin/python" ]; then
    again=(--force-reinstall --no-deps)  # the same version number, new code: install it anew
  else
    # The interpreter must be one every user can run: the system's, never a pyenv under /root.
    py=$(PATH=/usr/local/bin:/usr/bin:/bin pick_python)
    py=$(PATH=/usr/local/bin:/usr/bin:/bin command -v "$py")
    say "class install: creating $venv with $($py --version)"
    "$py" -m venv "$venv" || die "could not create $venv ($py -m venv failed)"
  fi
  say "class install: installing vpnlab[$SYSTEM_EXTRAS] ${SYSTEM_PACKAGES[*]} (pip, a minute)"
  src=$(package_sources)
  installed=0
  { "$venv/bin/python" -m pip install -q --upgrade pip \
      && "$venv/bin/python" -m pip install -q "$src[$SYSTEM_EXTRAS]" "${SYSTEM_PACKAGES[@]}" \
      && { [ ${#again[@]} -eq 0 ] \
        || "$venv/bin/python" -m pip install -q "${again[@]}" "$src"; }; } >"$log" 2>&1 \
    || installed=$?
  rm -rf "$src"  # the copy of the sources, whether pip took them or not
  if [ "$installed" -ne 0 ]; then
    tail -n 20 "$log" >&2
    die "pip could not install the class install (full log: $log)"
  fi
  # rfc3987-syntax (pulled in by jsonschema[format-nongpl] for jupyter_events) builds about 35
  # parsers at import: 1.1 CPU s in every student's server start, for a format no Jupyter
  # schema uses (jupyter_server#1559; docs/performance.md, "A class at once").
  "$venv/bin/python" -m pip uninstall -q -y rfc3987-syntax >>"$log" 2>&1 || true
}

system_proxy() {
  local bin="$SYSTEM_PREFIX/proxy/node_modules/.bin/configurable-http-proxy"
  [ -x "$bin" ] && { say "class install: configurable-http-proxy present"; return; }
  if ! command -v npm >/dev/null; then
    say "class install: installing npm (apt-get, a minute or two)"
    apt-get update -q 2>&1 | tail -n 1 >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm 2>&1 \
      | grep -E '^E:' >&2 || true
    command -v npm >/dev/null || die "npm could not be installed (configurable-http-proxy needs it)"
  fi
  say "class install: configurable-http-proxy into $SYSTEM_PREFIX/proxy (npm)"
  mkdir -p "$SYSTEM_PREFIX/proxy"
  npm install --no-audit --no-fund --prefix "$SYSTEM_PREFIX/proxy" configurable-http-proxy@5 \
    >"$SYSTEM_PREFIX/proxy/npm.log" 2>&1 \
    || { tail -n 5 "$SYSTEM_PREFIX/proxy/npm.log" >&2; die "npm failed"; }
}

# The student edition, built next to the old one and swapped in: students never see half of it.
system_course() {
  local new="$SYSTEM_PREFIX/course.new"
  rm -rf "$new"
  say "class install: the student edition of the course into $SYSTEM_PREFIX/course"
  PYTHON="$SYSTEM_PREFIX/venv/bin/python" PATH="$SYSTEM_PREFIX/venv/bin:$PATH" \
    bash "$VPNLAB_ROOT/scripts/student-edition.sh" "$new" >&2 \
    || die "scripts/student-edition.sh could not build the student edition"
  compgen -G "$new/*.ipynb" >/dev/null || die "the student edition in $new has no notebooks"
  rm -rf "$SYSTEM_PREFIX/course.old"
  [ ! -d "$SYSTEM_PREFIX/course" ] || mv "$SYSTEM_PREFIX/course" "$SYSTEM_PREFIX/course.old"
  mv "$new" "$SYSTEM_PREFIX/course"
  rm -rf "$SYSTEM_PREFIX/course.old"
}

# The hub's grader service (vpnlab/grader/, deploy/jupyterhub/grader_service.py): a system user
# of its own and its store folder (0700), which no student can read. VPNLAB_GRADER_USER=none
# skips it (the tests' class installs: they make their own grader user and remove it).
system_grader() {
  local user=${VPNLAB_GRADER_USER:-vpnlab-grader} store=/var/lib/vpnlab-grader
  [ "$user" = none ] && return
  id -u "$user" >/dev/null 2>&1 || {
    say "class install: the grader service's user $user (useradd --system)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  }
  install -d -m 0700 -o "$user" -g "$user" "$store"
}

setup_system() {
  require_root
  umask 022
  install_debian_packages
  mkdir -p "$SYSTEM_PREFIX/bin" "$SYSTEM_PREFIX/jupyterhub"
  system_venv
  system_proxy
  system_course
  system_grader
  install -m 755 "$VPNLAB_ROOT/deploy/start-singleuser.sh" "$SYSTEM_PREFIX/bin/vpnlab-start-singleuser"
  install -m 644 "$VPNLAB_ROOT"/deploy/jupyterhub/*.py "$SYSTEM_PREFIX/jupyterhub/"
  # a student's server without the instructor's extensions (jupyterhub_config.py): the server
  # extensions (jupyter_server_config.json) and their JupyterLab parts (labconfig/), whole
  rm -rf "$SYSTEM_PREFIX/jupyterhub/student-server"
  cp -R "$VPNLAB_ROOT/deploy/jupyterhub/student-server" "$SYSTEM_PREFIX/jupyterhub/"
  chown -R root:root "$SYSTEM_PREFIX"
  # files and folders only: never a device node (a TUN node, VPNLAB_TUN_NODE) nor through a link
  find "$SYSTEM_PREFIX" \( -type f -o -type d \) -exec chmod u+w,go-w,a+rX {} +
  chmod 755 "$SYSTEM_PREFIX"
  say "class install: done ($SYSTEM_PREFIX; the hub: docs/class.md)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  if [ "${1:-}" = "--system" ]; then
    setup_system
  else
    setup "${1:-}"
  fi
fi
