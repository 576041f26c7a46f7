#!/usr/bin/env bash
# The student edition of the course: every notebook without its solutions and hidden tests.
#
# The instructor edition is notebooks/NN_*.ipynb (paired with NN_*.py by jupytext): its
# answers are in nbgrader's "### BEGIN SOLUTION" / "### END SOLUTION" regions, its
# instructor-only checks in "### BEGIN HIDDEN TESTS" / "### END HIDDEN TESTS". nbgrader's
# ClearSolutions and ClearHiddenTests preprocessors, run by nbconvert, remove both
# (scripts/student_edition_config.py). Nothing of vpnlab is imported.
#
# Usage: scripts/student-edition.sh [OUT]     (default: notebooks/student; PYTHON=... to pick,
# else the project's .venv, else python3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/notebooks/student}
python=${PYTHON:-}
if [ -z "$python" ]; then
    python=python3
    [ -x "$root/.venv/bin/python" ] && python=$root/.venv/bin/python
fi
if ! "$python" -c "import nbgrader, nbconvert" 2>/dev/null; then
    echo "student-edition: nbgrader is not installed for $python" \
        "(pip install 'vpnlab[course]', or run scripts/test.sh once)" >&2
    exit 1
fi
mkdir -p "$out"
"$python" -m nbconvert --to notebook --log-level WARN \
    --config "$root/scripts/student_edition_config.py" \
    --output-dir "$out" "$root"/notebooks/[0-9][0-9]_*.ipynb
echo "student edition: $out"
