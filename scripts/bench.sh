#!/usr/bin/env bash
# The benchmark of the README: installs what is missing (as test.sh does; OpenVPN only here,
# on demand), then measures single-stream TCP through the lab with no tunnel, OpenVPN 2.6 and
# every vpnlab cipher x data path, in a lab of its own (prefix vbench-, removed at the end).
# Arguments go to `vpnlab bench` (vpnlab/course/bench.py), e.g. `sudo scripts/bench.sh --quick`,
# `sudo scripts/bench.sh --runs 5 --out /tmp/bench`; `.venv/bin/vpnlab bench --help` lists them.
# `sudo scripts/bench.sh --footprint [--idle-seconds S] [--datapath simple]`: instead, what a lab
# costs a class (seconds of lab up/down, start-up and RSS per daemon, RSS of the lab, CPU of the
# idle lab; prefix vfoot-, about 15 s, no OpenVPN needed).
# `sudo scripts/bench.sh --clients [N]`: instead, one server and a class of N (default 250, at most
# 1000: past 252 IPv6 only) lightweight load clients: handshake latency one after another and all
# at once, server RSS per client, server CPU with all N idle, echoes (prefix vclass-, about 20 s,
# no OpenVPN needed).
# Progress lines ([vpnlab] ...) go to stderr, the benchmark's own output to stdout.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
setup course
footprint=0
for arg in "$@"; do [[ $arg == --footprint || $arg == --clients ]] && footprint=1; done
if ((footprint)); then
  cd "$VPNLAB_ROOT"
  say "footprint of one lab, or of one server and a class (about 15-20 s)"
  exec "$VENV/bin/vpnlab" bench "$@"
fi
if ! command -v openvpn >/dev/null; then
  say "OpenVPN (the comparison): installing with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openvpn 2>&1 \
    | grep -E '^(Setting up|E:)' | sed 's/^/    /' >&2 || true
  command -v openvpn >/dev/null || say "no openvpn: its case is skipped"
fi
cd "$VPNLAB_ROOT"
say "benchmark (progress below; about 8 minutes, --quick: under a minute)"
exec "$VENV/bin/vpnlab" bench "$@"
