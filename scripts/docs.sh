#!/usr/bin/env bash
# The course website: the notebooks, one chapter each, with their outputs and figures, and the
# reference pages of docs/ (Sphinx with MyST and myst-nb, docs/conf.py), built into build/site/
# with every warning an error. Prints where the site is. No root needed. Sphinx's scratch (its
# doctrees, myst-nb's images) stays in build/doctrees/, so OUT holds the site and nothing beside it.
#
#   scripts/docs.sh [--strict] [OUT]      (OUT: default build/site)
#
# The notebooks are not run here (they need root and a lab, minutes each): the notebook tests
# (`sudo scripts/test.sh tests/notebooks`) leave them executed in build/executed/, and a chapter
# whose notebook has not been executed since its last change is built without outputs, with a
# note saying so. --strict (or VPNLAB_DOCS_STRICT=1; CI, after the whole suite) fails instead,
# naming those chapters.
# Progress lines ([vpnlab] ...) and Sphinx's warnings go to stderr.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
strict=${VPNLAB_DOCS_STRICT:-0}
if [ "${1:-}" = --strict ]; then strict=1; shift; fi
case "$#:${1:-}" in 0:* | 1:[!-]*) ;; *) die "usage: scripts/docs.sh [--strict] [OUT]" ;; esac
setup course,dev  # Sphinx and myst-nb (dev), jupytext and nbformat to read the notebooks (course)
cd "$VPNLAB_ROOT"
out=$(realpath -m "${1:-build/site}")
say "Course website: building docs/ into $out (sphinx-build -W)"
start=$SECONDS
VPNLAB_DOCS_STRICT=$strict "$VENV/bin/sphinx-build" -W --keep-going -q -b html \
  -d "$VPNLAB_ROOT/build/doctrees" docs "$out" \
  || die "the course website did not build (the warnings above)"
pages=$(find "$out" -name '*.html' -not -path '*/_static/*' | wc -l)
say "Course website: $pages pages in $((SECONDS - start)) s"
echo "$out/index.html"
