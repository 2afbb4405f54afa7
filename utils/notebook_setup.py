"""What the first code cell of every notebook does: ``DEVICE = setup()``.

* On Colab: installs the course's packages at the tested versions, except torch and numpy,
  which stay as Colab ships them (replacing them forces a runtime restart).
* Everywhere: compares installed versions with the tested set (``utils.versions``) and
  stops with the exact command that fixes a mismatch.
* Picks the device (cuda, then mps, then cpu), turns gradients off (lessons that train
  turn them on locally), and prepares pictures to render offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from utils import versions

ROOT = Path(__file__).resolve().parent.parent
# Packages a notebook needs at run time (the dev tools are the test suite's business).
RUNTIME = ("torch", "numpy", "transformers", "transformer-lens", "sae-lens", "tokenizers",
           "safetensors", "circuitsvis", "plotly", "ipywidgets")
ALLOW_ENV = "COURSE_ALLOW_VERSION_MISMATCH"


class SetupError(RuntimeError):
    """The environment does not match what the course was tested on."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;31m{self.args[0]}\x1b[0m"]


def on_colab() -> bool:
    return "google.colab" in sys.modules


def runtime_mismatches(colab: bool) -> dict[str, tuple[str | None, str]]:
    """{package: (installed, tested)} for runtime packages that differ from the tested set.

    On Colab torch only has to lie in the supported range, and numpy is Colab's business.
    """
    bad = {p: v for p, v in versions.mismatches().items() if p in RUNTIME}
    if colab:
        bad.pop("numpy", None)
        torch_version = versions.installed("torch")
        if versions.torch_satisfies(torch_version):
            bad.pop("torch", None)
    return bad


def fix_command(colab: bool) -> str:
    if colab:
        return f"!pip install -q -c {ROOT / 'constraints.txt'} -e {ROOT}   # then Runtime > Restart session"
    return "make setup   (or: pip install -c constraints.txt -e '.[dev]' in the course folder), then restart the kernel"


def pip_install_command() -> list[str]:
    """The pip call that installs the course on Colab: tested versions, torch/numpy untouched."""
    return [sys.executable, "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
            "-e", str(ROOT)]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def setup(allow_mismatch: bool | None = None, grad: bool = False, quiet: bool = False) -> str:
    """Prepare the notebook; returns the device name to use."""
    colab = on_colab()
    if colab and runtime_mismatches(colab):
        print("Installing the course's packages (torch and numpy stay as Colab ships them)…")
        _run(pip_install_command())
    bad = runtime_mismatches(colab)
    if allow_mismatch is None:
        allow_mismatch = os.environ.get(ALLOW_ENV) == "1"
    if bad:
        rows = "\n".join(f"  {p}: installed {have or 'nothing'}, tested {want}" for p, (have, want) in bad.items())
        message = (f"These packages differ from the versions this course was tested with:\n{rows}\n"
                   f"Fix: {fix_command(colab)}\n"
                   f"(To carry on anyway, set {ALLOW_ENV}=1 or call setup(allow_mismatch=True).)")
        if not allow_mismatch:
            raise SetupError(message)
        print("Warning: " + message)

    import torch

    from utils import plotting
    from utils.models import default_device

    torch.set_grad_enabled(grad)
    plotting.reset_session()
    plotting.configure(colab=colab)
    device = default_device()
    if not quiet:
        tl = versions.installed("transformer-lens")
        print(f"Course ready: torch {torch.__version__} on {device}, transformer-lens {tl}"
              f"{', Colab' if colab else ''}.")
    return device


# Where Colab fetches the course from. Set this when the course is published; the setup
# cell below is the one place that uses it, and a test keeps every notebook's copy equal.
COURSE_GIT_URL = "https://github.com/handson-mechinterp/handson-mechinterp"

SETUP_CELL = f"""# Setup (run this first). On Colab it fetches and installs the course; everywhere it
# checks package versions against the tested set and picks a device.
import sys
if "google.colab" in sys.modules:
    !test -d handson-mechinterp || git clone -q --depth 1 {COURSE_GIT_URL}
    %cd handson-mechinterp
from utils.notebook_setup import setup
DEVICE = setup()"""
