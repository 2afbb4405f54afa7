#!/usr/bin/env bash
# How long a fresh Colab runtime spends in the setup cell's install, measured off Colab: an empty
# virtual environment gets only what Colab ships (torch, numpy, matplotlib), the latest bundle
# from dist/ is extracted, and the setup cell's own pip command installs the course's other
# runtime packages from the package index. Prints the three times.
#
#   make bundle && bash scripts/colab_install_time.sh [work folder]
#
# COLAB_TORCH names the torch to start from (a wheel file or a requirement; default "torch").
set -euo pipefail
bundle=$(realpath "$(ls "$(dirname "$0")"/../dist/handson-mechinterp-*.tar.gz | tail -1)")
work=$(realpath "${1:-$(mktemp -d)}")
cd "$work"
rm -rf venv course
python3 -m venv venv
start=$(date +%s)
venv/bin/pip install -q --no-cache-dir "${COLAB_TORCH:-torch}" numpy matplotlib
platform=$(($(date +%s) - start))
mkdir course && tar -xzf "$bundle" -C course
cd course/"$(ls course)"
start=$(date +%s)
../../venv/bin/python - <<'PY'
import subprocess
import tempfile
from pathlib import Path

from utils import versions
from utils.course.notebook_setup import colab_install_command

packages = [p.package for p in versions.problems(versions.RUNTIME) if p.package not in versions.PLATFORM]
print("installing:", ", ".join(packages), flush=True)
with tempfile.TemporaryDirectory() as tmp:
    pins = Path(tmp) / "platform-pins.txt"
    pins.write_text(versions.platform_pins())
    subprocess.run([*colab_install_command(packages, pins), "--no-cache-dir"], check=True)
left = versions.problems(versions.RUNTIME)
print("still differing:", ", ".join(p.package for p in left) or "nothing", flush=True)
PY
install=$(($(date +%s) - start))
start=$(date +%s)
OMP_NUM_THREADS=1 ../../venv/bin/python -c "from utils import load_model; load_model('storyworld-4l', device='cpu')"
load=$(($(date +%s) - start))
echo "Colab's own packages ${platform} s; the setup cell's install ${install} s; the first zoo model loaded in ${load} s"
