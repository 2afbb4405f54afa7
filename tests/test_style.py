"""Style: ruff's lint rules and formatter hold for the package, the tests, the scripts and every notebook."""

import subprocess
import sys

import pytest

from utils.paths import ROOT

CHECKED = ["utils", "tests", "scripts", "solutions", "notebooks"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args, *CHECKED], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize(
    "command", [("check", "--output-format", "concise"), ("format", "--check")], ids=["lint", "format"]
)
def test_ruff_is_clean(command):
    result = ruff(*command)
    assert result.returncode == 0, (
        result.stdout
        + result.stderr
        + f"\nfix with: .venv/bin/ruff check --fix {' '.join(CHECKED)} && .venv/bin/ruff format {' '.join(CHECKED)}"
    )


def test_the_banned_apis_are_caught(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\nstate = torch.load('weights.pt')\n")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "never unpickle" in result.stdout
