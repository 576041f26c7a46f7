#!/usr/bin/env bash
# The test command of the README: installs what is missing (as netns-lab.sh does), then runs
# ruff (lint and format) and the whole test suite: unit tests (no root needed) and lab tests (root: real network
# namespaces, each removed again even when a test fails). Extra arguments go to pytest,
# e.g. `sudo scripts/test.sh tests/unit -x`.
# Progress lines ([vpnlab] ...) go to stderr, ruff's and pytest's output to stdout.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
setup test
cd "$VPNLAB_ROOT"
say "ruff check and ruff format --check"
"$VENV/bin/ruff" check vpnlab tests
"$VENV/bin/ruff" format --check vpnlab tests
say "pytest ${*:-(the whole suite)}"
"$VENV/bin/python" -m pytest "$@"
