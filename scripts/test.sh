#!/usr/bin/env bash
# The test command of the README: installs what is missing (as netns-lab.sh does), then runs
# ruff (lint and format), mypy and the whole test suite: unit tests (no root needed) and lab tests
# (root: real network namespaces, each removed again even when a test fails), then builds the
# course website from the notebooks the suite executed and checks it in Chromium (tests/docs,
# scripts/docs.sh). Extra arguments go to pytest instead of the whole suite and the website,
# e.g. `sudo scripts/test.sh tests/unit -x`; VPNLAB_TEST_WORKERS=1 runs one test at a time.
# Progress lines ([vpnlab] ...) go to stderr, ruff's and pytest's output to stdout.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
require_root  # the lab tests build labs as root (and make the users of the rootless tests)
setup course,dev,hub
cd "$VPNLAB_ROOT"
say "ruff check and ruff format --check"
# notebooks: the jupytext .py pairs; deploy: the hub's config and spawner; scripts: the benches
"$VENV/bin/ruff" check vpnlab tests docs notebooks deploy scripts
"$VENV/bin/ruff" format --check vpnlab tests docs deploy scripts
# mypy, strict ([tool.mypy] in pyproject.toml), on the whole package: the daemons, the lab,
# the grader, the instruments, the course and the command line (every drop counter key a Drop)
say "mypy --strict on the whole package"
"$VENV/bin/mypy" vpnlab
# Labs are isolated by prefix and mostly wait on timers: three at a time take the suite from
# 11 to about 5 minutes on 2 cores (a test file stays on one worker: its labs are shared).
workers=${VPNLAB_TEST_WORKERS:-3}
if [ $# -gt 0 ]; then
  say "pytest on $workers workers $*"
  exec "$VENV/bin/python" -m pytest -n "$workers" --dist loadfile "$@"
fi
say "pytest on $workers workers (the whole suite)"
"$VENV/bin/python" -m pytest -n "$workers" --dist loadfile --ignore tests/docs
# The course website, now that the notebook tests have left every chapter executed in
# build/executed/: scripts/docs.sh with warnings as errors and no chapter without its outputs,
# then every page, link, anchor and figure checked in Chromium.
say "the course website: scripts/docs.sh --strict, checked in Chromium (tests/docs)"
VPNLAB_DOCS_STRICT=1 "$VENV/bin/python" -m pytest -n 0 tests/docs
