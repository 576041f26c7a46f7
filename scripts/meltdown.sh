#!/usr/bin/env bash
# TCP meltdown, measured (issue 8): installs what is missing (as test.sh does), then sweeps loss
# and delay on the isp for the VPN over UDP (the notes) and over TCP (the counter-example), in a
# lab of its own (prefix vmelt-, removed at the end). Prints the README's table, writes
# meltdown-results/results.json and meltdown-results/meltdown.png.
# Arguments go to `vpnlab meltdown` (vpnlab/course/meltdown.py), e.g.
# `sudo scripts/meltdown.sh --quick`, `sudo scripts/meltdown.sh --losses 0 1 5 --delays 0 50
# --seconds 5`; `.venv/bin/vpnlab meltdown --help` lists them.
# Progress lines ([vpnlab] ...) go to stderr, the sweep's own output to stdout.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
setup course
cd "$VPNLAB_ROOT"
say "TCP meltdown sweep (progress below; about 8 minutes, --quick: under a minute)"
exec "$VENV/bin/vpnlab" meltdown "$@"
