#!/usr/bin/env bash
# The student edition of the course: every notebook without its solutions and hidden tests.
#
# The instructor edition is notebooks/NN_*.ipynb (paired with NN_*.py by jupytext): its
# answers are in nbgrader's "### BEGIN SOLUTION" / "### END SOLUTION" regions, its
# instructor-only checks in "### BEGIN HIDDEN TESTS" / "### END HIDDEN TESTS". nbgrader's
# ClearSolutions and ClearHiddenTests preprocessors, run by nbconvert, remove both
# (scripts/student_edition_config.py). Nothing of vpnlab is imported.
#
# Usage: scripts/student-edition.sh [OUT]     (default: notebooks/student; PYTHON=... to pick)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/notebooks/student}
python=${PYTHON:-python3}
mkdir -p "$out"
"$python" -m nbconvert --to notebook --log-level WARN \
    --config "$root/scripts/student_edition_config.py" \
    --output-dir "$out" "$root"/notebooks/[0-9][0-9]_*.ipynb
echo "student edition: $out"
