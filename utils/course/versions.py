"""The version policy: which package versions the course runs on, and how to get there.

Two kinds of package:

* **Platform packages** (``PLATFORM``): what a platform such as Colab or a CUDA machine ships
  in its own build. A running kernel cannot swap them without a restart, and their builds
  are tied to the hardware, so any version inside the supported range is kept (local tags
  such as ``+cu126`` or ``+cpu`` included). Where none in range is installed, setup installs
  the tested version.
* **The course's libraries and the test suite's tools**: exactly the versions in ``TESTED``.
  ``constraints.txt`` pins them and never the platform packages
  (``python -m utils.course.versions constraints > constraints.txt`` regenerates it).

``problems()`` lists what differs, each with the exact command that fixes it. The notebooks'
setup cell, the test suite and ``scripts/setup.sh`` all ask it. This module needs only the
standard library: setup.sh runs it (``python -m utils.course.versions``) before anything is installed.
"""

from __future__ import annotations

import operator
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from utils.paths import CONSTRAINTS, ROOT

# Platform packages and their supported ranges. matplotlib belongs here because Colab imports
# it when the kernel starts (for inline figures): a new one would only load after a restart.
PLATFORM = {
    "torch": ">=2.6,<3",  # the tested transformer-lens (3.9) requires torch>=2.6
    "numpy": ">=1.26,<3",  # what transformer-lens, circuitsvis and matplotlib accept; 3 may break the ABI
    "matplotlib": ">=3.8,<4",
}
TESTED = {
    # platform packages: installed at these versions only where none in range is present
    "torch": "2.13.0",
    "numpy": "2.4.6",
    "matplotlib": "3.11.2",
    # the course's libraries
    "transformers": "5.23.0",
    "transformer-lens": "3.9.0",
    "sae-lens": "6.54.12",
    "tokenizers": "0.23.3",
    "safetensors": "0.8.0",
    "circuitsvis": "1.43.3",
    "plotly": "7.1.0",
    "ipywidgets": "8.1.9",
    "tqdm": "4.70.1",
    "nnsight": "0.8.1",  # the appendix's second way in, and the road to NDIF
    "gguf": "0.19.0",  # reads SmolLM2's 4-bit file once, to convert it (0.10 and 0.11 fail on numpy 2)
    "pyvene": "0.1.8",  # interchange interventions and DAS (lesson 09 checks its interchange against it)
    # the test suite's tools
    "pytest": "9.2.0",
    "pytest-xdist": "3.8.0",
    # every test's time limit (tests/conftest.py sets it per kind of test): a hang fails one test with every
    # thread's stack, and the suite goes on
    "pytest-timeout": "2.4.0",
    "nbval": "0.11.0",  # validates the lessons: pytest --nbval-lax solutions/ (make course, make validate)
    "nbformat": "5.11.1",
    "nbconvert": "7.17.2",
    "jupyterlab": "4.6.6",
    # The kernel that runs the lessons (JupyterLab's, the test suite's, make course's). ipykernel 7 sends its shell
    # replies past the socket's reader and can leave a request unread: a notebook run then waits, both sides idle,
    # until its cell time-out (measured: about one run in a few hundred; two such waits cost a CI run 8 minutes).
    # ipykernel 6 reads every request. Colab's own kernel is never touched (not a run-time package).
    "ipykernel": "6.31.0",
    "pyyaml": "6.0.3",
    "playwright": "1.65.2",
    "ruff": "0.17.6",
    "eai-sparsify": "1.3.3",
    # the site to read the course on (make site): Sphinx with MyST-NB and the book theme, built offline
    "sphinx": "9.0.4",
    "myst-nb": "1.4.0",
    "sphinx-book-theme": "1.4.0",  # trains the zoo's transcoders (make zoo); lessons load their safetensors without it
}
# What a notebook needs at run time; the rest of ``TESTED`` is the test suite's business.
RUNTIME = (
    "torch",
    "numpy",
    "matplotlib",
    "transformers",
    "transformer-lens",
    "sae-lens",
    "tokenizers",
    "safetensors",
    "circuitsvis",
    "plotly",
    "ipywidgets",
    "tqdm",
    "nnsight",
    "pyvene",
    "gguf",
)
COURSE = "handson-mechinterp"  # the course's own distribution (an editable install of this repository)
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"

_OPERATORS = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Problem:
    """One package that differs from the policy, and the command that fixes it."""

    package: str
    installed: str | None
    wanted: str  # a tested version ("3.9.0") or a supported range (">=2.6,<3")
    fix: str
    hint: str = ""

    def __str__(self) -> str:
        have = f"installed {self.installed}" if self.installed else "missing"
        want = f"supported {self.wanted}" if self.package in PLATFORM else f"tested {self.wanted}"
        return f"{self.package}: {have}, {want}"


def installed(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...] | None:
    """(2, 9, 1) for "2.9.1+cu126": the release numbers, without local tag or pre-release suffix."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(n) for n in match.group().split(".")) if match else None


def in_range(version: str | None, spec: str) -> bool:
    """Does ``version`` (local tags allowed) satisfy ``spec``, a comma-separated list like ">=2.6,<3"?"""
    have = _release(version) if version else None
    if have is None:
        return False
    for clause in spec.split(","):
        op, bound = re.fullmatch(r"\s*(>=|<=|==|!=|<|>)\s*([\d.]+)\s*", clause).groups()
        want = tuple(int(n) for n in bound.split("."))
        width = max(len(have), len(want))
        if not _OPERATORS[op](have + (0,) * (width - len(have)), want + (0,) * (width - len(want))):
            return False
    return True


def matches_tested(package: str, version: str | None) -> bool:
    """Is ``version`` what the policy asks of ``package``: in range, or exactly the tested version?"""
    if package in PLATFORM:
        return in_range(version, PLATFORM[package])
    return version is not None and version.split("+")[0] == TESTED[package]


def _fix(package: str, python: str) -> tuple[str, str]:
    """The command (and a hint, where one helps) that installs what the policy asks of ``package``."""
    pip = f'"{python}" -m pip install'
    if package == "torch":
        return (
            f'{pip} "torch=={TESTED["torch"]}"',
            f"on a machine without CUDA, add --index-url {CPU_TORCH_INDEX} for the smaller CPU build",
        )
    if package in PLATFORM:
        return f'{pip} "{package}=={TESTED[package]}"', ""
    return f'{pip} -c "{CONSTRAINTS}" "{package}=={TESTED[package]}"', ""


def problems(packages: Iterable[str] = tuple(TESTED), python: str | None = None) -> list[Problem]:
    """Every package in ``packages`` that differs from the policy, with the command (for ``python``,
    by default the running interpreter) that fixes it."""
    python = python or sys.executable
    found = []
    for package in packages:
        have = installed(package)
        if not matches_tested(package, have):
            wanted = PLATFORM.get(package, TESTED[package])
            found.append(Problem(package, have, wanted, *_fix(package, python)))
    return found


def constraints() -> str:
    """The text of constraints.txt: the tested version of every package that is not a platform package."""
    return "".join(f"{p}=={v}\n" for p, v in TESTED.items() if p not in PLATFORM)


def platform_pins() -> str:
    """Constraints that hold each platform package where it is (the tested version where none
    in range is installed), so that pip fails rather than replaces one."""
    lines = []
    for package, spec in PLATFORM.items():
        have = installed(package)
        lines.append(f"{package}=={have if in_range(have, spec) else TESTED[package]}\n")
    return "".join(lines)


def venv_options() -> list[str]:
    """Options for ``python -m venv``: see the system's torch when it lies in range (a CUDA build, say)."""
    return ["--system-site-packages"] if in_range(installed("torch"), PLATFORM["torch"]) else []


def setup_plan(python: str, pins: Path, torch_index: str | None = None) -> list[list[str]]:
    """The pip commands that bring this environment to the policy; none when it already conforms.

    A torch outside the range (or none) is replaced first, by the tested version from
    ``torch_index`` when given. Then the course installs in editable mode with constraints.txt
    and ``pins`` (the file holding ``platform_pins()``), which keep every platform package where it is.
    """
    if not problems() and installed(COURSE) is not None:
        return []
    pip = [python, "-m", "pip", "install", "-q"]
    plan = []
    if not in_range(installed("torch"), PLATFORM["torch"]):
        plan.append([*pip, f"torch=={TESTED['torch']}", *(["--index-url", torch_index] if torch_index else [])])
    replaced = [
        f"{p}=={TESTED[p]}" for p, spec in PLATFORM.items() if p != "torch" and not in_range(installed(p), spec)
    ]
    plan.append([*pip, "-c", str(CONSTRAINTS), "-c", str(pins), *replaced, "-e", f"{ROOT}[dev]"])
    return plan


def repair(python: str | None = None) -> int:
    """Check the environment against the policy and, where it differs, run ``setup_plan``."""
    python = python or sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "platform-pins.txt"
        pins.write_text(platform_pins())
        plan = setup_plan(python, pins, os.environ.get("TORCH_INDEX_URL") or None)
        if not plan:
            return 0
        found = problems()
        if len(found) > 3:
            print(f"setup: {len(found)} packages are missing or differ from the tested set")
        for problem in found if len(found) <= 3 else ():
            print(f"setup: {problem}")
        if installed(COURSE) is None:
            print(f"setup: {COURSE} (this repository) is not installed")
        for command in plan:
            print("setup: pip install " + " ".join(command[5:]))
            if subprocess.run(command).returncode != 0:
                print("setup: pip failed (see above)", file=sys.stderr)
                return 1
    print(f"setup: done (torch {installed('torch')})")
    return 0


def main(argv: list[str]) -> int:
    """``python -m utils.course.versions constraints|check|venv-options|repair``."""
    command = argv[0] if len(argv) == 1 else ""
    if command == "constraints":
        sys.stdout.write(constraints())
    elif command == "venv-options":
        print(" ".join(venv_options()))
    elif command == "check":
        found = problems()
        for problem in found:
            print(f"{problem}\n  fix: {problem.fix}" + (f"\n  ({problem.hint})" if problem.hint else ""))
        return 1 if found else 0
    elif command == "repair":
        return repair()
    else:
        print("usage: python -m utils.course.versions constraints|check|venv-options|repair", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
