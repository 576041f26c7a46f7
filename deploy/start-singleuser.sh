#!/bin/sh
# A student's server: the course in ~/course (on the first start), then JupyterLab
# (jupyterhub-singleuser) in a rootless holder of its own (vpnlab rootless run), so every lab a
# notebook builds lives in namespaces the student owns and goes when the server stops.
# The entry point of deploy/Dockerfile (Zero to JupyterHub, deploy/z2jh/values.yaml) and the
# command of deploy/jupyterhub/jupyterhub_config.py (one server, LocalProcessSpawner).
#
#   deploy/start-singleuser.sh [ARGS...]   ARGS go to jupyterhub-singleuser
#
# VPNLAB_PYTHON: the Python with vpnlab and jupyterhub (default: python3 on PATH);
# VPNLAB_COURSE: the notebooks to copy (default: this repository's notebooks/);
# VPNLAB_SERVER: another program instead of jupyterhub-singleuser (the tests use it).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${VPNLAB_PYTHON:-python3}
course=${VPNLAB_COURSE:-$here/../notebooks}
if [ ! -e "$HOME/course" ]; then
  mkdir -p "$HOME/course"
  cp "$course"/*.ipynb "$HOME/course/"
fi
if [ -n "${VPNLAB_SERVER:-}" ]; then
  set -- "$VPNLAB_SERVER" "$@"
else  # root of the student's own user namespace inside the holder: hence --allow-root
  set -- "$python" -m jupyterhub.singleuser --allow-root "$@"
fi
exec "$python" -m vpnlab rootless run -- "$@"
