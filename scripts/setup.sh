#!/usr/bin/env bash
# Idempotent setup: a virtual environment in .venv with the tested package set.
# Running it again does nothing while pyproject.toml and constraints.txt are unchanged.
#
# torch is never replaced: if the system Python already has a torch inside the supported
# range (a CUDA build on a GPU machine, say), the environment sees it through
# --system-site-packages and keeps it. Otherwise the tested version is installed: the
# CPU build where pip's configuration provides it (as on the course's CI machines); set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu elsewhere to avoid a CUDA download.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    if "$PYTHON" utils/versions.py torch-ok 2>/dev/null; then
        echo "setup: creating $VENV, reusing the system's torch"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        echo "setup: creating $VENV with $("$PYTHON" --version)"
        "$PYTHON" -m venv "$VENV"
    fi
fi
PY="$VENV/bin/python"
stamp="$VENV/.setup-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
    exit 0
fi

"$PY" -m pip install -qq --upgrade pip
if ! "$PY" utils/versions.py torch-ok 2>/dev/null; then
    want=$("$PY" utils/versions.py tested-torch)
    echo "setup: installing torch==$want"
    "$PY" -m pip install -qq "torch==$want" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
echo "setup: installing the course and the tested package set"
"$PY" -m pip install -qq -c constraints.txt -e ".[dev]"
rm -f "$VENV"/.setup-*
touch "$stamp"
echo "setup: done ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
