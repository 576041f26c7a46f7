#!/usr/bin/env bash
# The test command of the README: installs what is missing (as netns-lab.sh does), then runs
# ruff (lint and format) and the whole test suite: unit tests (no root needed) and lab tests
# (root: real network namespaces, each removed again even when a test fails). Extra arguments
# go to pytest,
# e.g. `sudo scripts/test.sh tests/unit -x`; VPNLAB_TEST_WORKERS=1 runs one test at a time.
# Progress lines ([vpnlab] ...) go to stderr, ruff's and pytest's output to stdout.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
require_root  # the lab tests build labs as root (and make the users of the rootless tests)
setup course,dev,hub
install_hub_proxy  # for tests/lab/test_jupyterhub.py
cd "$VPNLAB_ROOT"
say "ruff check and ruff format --check"
"$VENV/bin/ruff" check vpnlab tests notebooks  # notebooks: the jupytext .py pairs
"$VENV/bin/ruff" format --check vpnlab tests
# Labs are isolated by prefix and mostly wait on timers: three at a time take the suite from
# 11 to about 5 minutes on 2 cores (a test file stays on one worker: its labs are shared).
workers=${VPNLAB_TEST_WORKERS:-3}
say "pytest on $workers workers ${*:-(the whole suite)}"
"$VENV/bin/python" -m pytest -n "$workers" --dist loadfile "$@"
