"""The tested package set: the one place that says which versions the course runs on.

``python -m utils.versions constraints > constraints.txt`` regenerates the committed pip
constraints (scripts/setup.sh and environment.yml use them; a test keeps them in sync); the notebooks' setup cell compares installed versions with
``TESTED``. torch and numpy are never constrained on Colab: its preinstalled builds must
stay, so torch is only required to lie in ``TORCH_RANGE``.
"""

from __future__ import annotations

import sys
from importlib import metadata

TORCH_RANGE = ">=2.4"
TESTED = {
    "torch": "2.13.0",
    "transformers": "5.23.0",
    "transformer-lens": "3.9.0",
    "sae-lens": "6.54.12",
    "tokenizers": "0.23.3",
    "safetensors": "0.8.0",
    "circuitsvis": "1.43.3",
    "plotly": "7.1.0",
    "ipywidgets": "8.1.9",
    "numpy": "2.4.6",
    "nbval": "0.11.0",
    "pytest": "9.2.0",
    "jupyterlab": "4.6.6",
    "matplotlib": "3.11.2",
    "playwright": "1.65.2",
}
# Installed but never constrained where a platform ships its own build (Colab).
PLATFORM_OWNED = ("torch", "numpy")


def installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def torch_satisfies(version: str | None) -> bool:
    """Is this torch version (local tags like ``+cu121`` allowed) inside ``TORCH_RANGE``?"""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    if version is None:
        return False
    try:
        return Version(version.split("+")[0]) in SpecifierSet(TORCH_RANGE)
    except InvalidVersion:
        return False


def mismatches() -> dict[str, tuple[str | None, str]]:
    """{package: (installed, tested)} for every tested package whose version differs."""
    out = {}
    for pkg, want in TESTED.items():
        have = installed(pkg)
        if have is None or have.split("+")[0] != want:
            out[pkg] = (have, want)
    return out


def constraints(include_platform_owned: bool = False) -> str:
    return "\n".join(f"{p}=={v}" for p, v in TESTED.items()
                     if include_platform_owned or p not in PLATFORM_OWNED) + "\n"


if __name__ == "__main__":  # also run as a plain script by scripts/setup.sh, before torch exists
    if sys.argv[1:] == ["torch-ok"]:
        sys.exit(0 if torch_satisfies(installed("torch")) else 1)
    if sys.argv[1:] == ["tested-torch"]:
        print(TESTED["torch"])
    elif sys.argv[1:] == ["constraints"]:
        sys.stdout.write(constraints())
    elif sys.argv[1:] == ["check"]:
        bad = mismatches()
        for p, (have, want) in bad.items():
            print(f"{p}: installed {have}, tested {want}")
        sys.exit(1 if bad else 0)
    else:
        print("usage: python -m utils.versions constraints|check|torch-ok|tested-torch", file=sys.stderr)
        sys.exit(2)
