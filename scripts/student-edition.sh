#!/usr/bin/env bash
# The student edition of the course, made by nbgrader: every notebook without its solutions and
# hidden tests.
#
# The instructor edition is notebooks/NN_*.ipynb (paired with NN_*.py by jupytext): its answers
# are in nbgrader's "### BEGIN SOLUTION" / "### END SOLUTION" regions, the answer key of its
# fixed facts in "### BEGIN HIDDEN TESTS" / "### END HIDDEN TESTS". scripts/nbgrader_course.py
# copies each into an nbgrader course directory (one assignment per notebook) with nbgrader's
# cell metadata made from those markers, and runs `nbgrader generate_assignment`; the released
# notebooks are copied to OUT. Nothing of vpnlab is imported.
#
# Usage: scripts/student-edition.sh [OUT]     (default: notebooks/student; PYTHON=... to pick,
# else the project's .venv, else python3; COURSE=DIR keeps the nbgrader course directory there,
# else a temporary one is removed)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
case "$#:${1:-}" in  # no argument, or one that is no option
    0:* | 1:[!-]*) ;;
    *) echo "usage: scripts/student-edition.sh [OUT]" >&2; exit 2 ;;
esac
out=${1:-$root/notebooks/student}
python=${PYTHON:-}
if [ -z "$python" ]; then
    python=python3
    [ -x "$root/.venv/bin/python" ] && python=$root/.venv/bin/python
fi
if ! "$python" -c "import nbgrader, nbformat" 2>/dev/null; then
    echo "student-edition: nbgrader is not installed for $python" \
        "(pip install 'vpnlab[course]', or run scripts/test.sh once)" >&2
    exit 1
fi
course=${COURSE:-}
if [ -z "$course" ]; then
    course=$(mktemp -d)
    trap 'rm -rf "$course"' EXIT
fi
"$python" "$root/scripts/nbgrader_course.py" "$course" "$root"/notebooks/[0-9][0-9]_*.ipynb >/dev/null
mkdir -p "$out"
cp "$course"/release/*/[0-9][0-9]_*.ipynb "$out"/
echo "student edition: $out"
