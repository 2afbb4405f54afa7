"""Install files: environment.yml resolves, torch stays a range, versions have one home."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from utils import versions

ROOT = Path(__file__).resolve().parent.parent


def pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(sections) == 1
    return sections[0]


def test_environment_yml_pins_python_and_lists_only_pip_requirements():
    for line in pip_section():
        if not line.startswith("-"):
            Requirement(line)  # raises on a malformed requirement
    assert "-c constraints.txt" in pip_section()


def test_constraints_file_is_generated_from_utils_versions():
    assert (ROOT / "constraints.txt").read_text() == versions.constraints(), \
        "constraints.txt is stale: python -m utils.versions constraints > constraints.txt"


def test_environment_yml_pip_section_resolves(tmp_path):
    reqs = tmp_path / "requirements.txt"
    # conda runs pip from the folder of environment.yml: make the paths absolute here.
    lines = [l.replace(" .[", f" {ROOT}[").replace("-c constraints.txt", f"-c {ROOT / 'constraints.txt'}")
             for l in pip_section()]
    reqs.write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                        "--ignore-installed", "--report", str(tmp_path / "report.json"),
                        "-r", str(reqs)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and ("Could not fetch" in r.stderr or "NewConnectionError" in r.stderr
                              or "Temporary failure in name resolution" in r.stderr):
        pytest.skip("no package index reachable to resolve against")
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"]
              for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert chosen["transformer-lens"].startswith("3.")
    assert chosen["sae-lens"] == versions.TESTED["sae-lens"]


def test_torch_is_required_as_a_range_that_admits_the_tested_build():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = [Requirement(d) for d in deps if Requirement(d).name == "torch"]
    assert len(torch) == 1
    spec = torch[0].specifier
    assert versions.TESTED["torch"] in spec and "==" not in str(spec)
    assert str(spec) == str(SpecifierSet(versions.TORCH_RANGE))


def test_constraints_never_pin_torch_or_numpy():
    text = versions.constraints()
    assert "torch" not in text and "numpy" not in text
    assert f"sae-lens=={versions.TESTED['sae-lens']}" in text


def test_installed_packages_are_the_tested_set():
    assert versions.mismatches() == {}


@pytest.mark.parametrize("version,ok", [("2.13.0", True), ("2.13.0+cpu", True),
                                        ("2.5.1+cu121", True), ("2.3.1", False), (None, False),
                                        ("not-a-version", False)])
def test_a_preinstalled_torch_in_range_is_kept(version, ok):
    assert versions.torch_satisfies(version) is ok


def test_setup_script_reuses_torch_and_installs_with_the_constraints():
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert "torch-ok" in script and "--system-site-packages" in script
    assert '-c constraints.txt -e ".[dev]"' in script


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("```", 2)[1]
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
