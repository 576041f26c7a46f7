#!/usr/bin/env bash
# The long fuzz (a benchmark, not CI): the seeded walks of tests/unit/test_fuzz.py over every
# wire format, the identity mode's Hellos, Welcomes, cookie replies and rekeys among them;
# >= 1 M steps by default. Usage: scripts/fuzz.sh [--steps N] [--jobs J] [--seed S]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" scripts/fuzz_long.py "$@"
