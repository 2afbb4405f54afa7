#!/usr/bin/env bash
# Idempotent setup: a virtual environment in .venv with the tested package set.
# Safe to run again: it does nothing when pyproject.toml and utils/versions.py are unchanged.
# torch: an importable torch inside the supported range is kept; otherwise the tested
# build is installed (the CPU build where pip's configuration provides it; set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu elsewhere to avoid a CUDA download).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.setup-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
    exit 0
fi

"$PY" -m pip install --quiet --upgrade pip
if ! "$PY" - <<'PY' 2>/dev/null
import sys, torch
from importlib.metadata import version
from packaging.specifiers import SpecifierSet
sys.path.insert(0, ".")
from utils.versions import TORCH_RANGE
sys.exit(0 if version("torch").split("+")[0] in SpecifierSet(TORCH_RANGE) else 1)
PY
then
    want=$("$PY" -c "import sys; sys.path.insert(0, '.'); from utils.versions import TESTED; print(TESTED['torch'])")
    echo "setup: installing torch==$want"
    "$PY" -m pip install --quiet "torch==$want" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
echo "setup: installing the course and the tested package set"
"$PY" -m pip install --quiet -c constraints.txt -e ".[dev]"
rm -f "$VENV"/.setup-*
touch "$stamp"
echo "setup: done ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
