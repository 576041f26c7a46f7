#!/bin/sh
# A student's server: the course merged into ~/course, then JupyterLab (jupyterhub-singleuser)
# in a rootless holder of its own (vpnlab rootless run), so every lab a notebook builds lives in
# namespaces the student owns and goes when the server stops.
# Installed by `scripts/setup.sh --system` as PREFIX/bin/vpnlab-start-singleuser: the command of
# deploy/jupyterhub/jupyterhub_config.py and the entry point of deploy/Dockerfile.
#
#   vpnlab-start-singleuser [ARGS...]    ARGS go to jupyterhub-singleuser
#
# VPNLAB_PYTHON: the Python with vpnlab and jupyterhub (default: PREFIX/venv/bin/python);
# VPNLAB_COURSE: the student edition (default: PREFIX/course);
# VPNLAB_SERVER: another program instead of jupyterhub-singleuser (the tests use it).
#
# The course update (every start; vpnlab/course/student_copy.py): a notebook the student does
# not have is copied; one whose cells the student has not changed since it was copied is
# replaced by the new version; one the student changed is never overwritten (the server's log
# says so, once). To take a new version over an edited one, a student renames theirs and
# restarts the server (File > Hub Control Panel > Stop My Server).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${VPNLAB_PYTHON:-$here/../venv/bin/python}
course=${VPNLAB_COURSE:-$here/../course}
[ -d "$course" ] || { echo "vpnlab: the course $course is missing or not readable" >&2; exit 1; }
# The student's commands (`vpnlab grader check` in a terminal, `!vpnlab lab status` in a cell)
# are the install's: its bin first (the hub passes on its own PATH, which has no venv in it).
PATH=$(cd "$(dirname "$python")" && pwd):$PATH
export PATH
"$python" -m vpnlab.course.student_copy "$course"  # vpnlab/course/student_copy.py
if [ -n "${VPNLAB_SERVER:-}" ]; then
  set -- "$VPNLAB_SERVER" "$@"
else  # root of the student's own user namespace inside the holder: hence --allow-root
  set -- "$python" -m jupyterhub.singleuser --allow-root "$@"
fi
exec "$python" -m vpnlab rootless run -- "$@"
