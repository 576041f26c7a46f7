#!/usr/bin/env bash
# Installs what vpnlab needs on a Debian/Ubuntu machine: Debian packages and a virtual
# environment (.venv) with the package and its Python dependencies. Safe to run again: it only
# installs what is missing. Sourced by netns-lab.sh and test.sh; also runnable on its own.
set -euo pipefail

VPNLAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$VPNLAB_ROOT/.venv"
DEB_PACKAGES=(iproute2 nftables tshark tcpdump iperf3 conntrack procps iputils-ping iputils-arping curl
  python3-venv)
# Only for the tests (`setup.sh test`): Debian's kernel in QEMU as the ESP peer where the host's
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

create_venv() {
  local extras=${1:-} stamp="$VENV/.vpnlab-installed" want
  want="$(sha256sum "$VPNLAB_ROOT/pyproject.toml" | cut -c1-16)$extras"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "Python environment: $VENV is up to date"; return
  fi
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
  echo "$want" > "$stamp"
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

# setup [EXTRAS]: everything, in order (as root: apt-get too; as a user: only the venv).
setup() {
  case ",${1:-}," in *,test,*) DEB_PACKAGES+=("${TEST_DEB_PACKAGES[@]}") ;; esac
  if [ "$(id -u)" -eq 0 ]; then install_debian_packages; else check_debian_packages; fi
  create_venv "${1:-}"
  case ",${1:-}," in *,hub,*) install_hub_proxy ;; esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  setup "${1:-}"
fi
