"""environment.yml: Python from conda, everything else through pip exactly as setup installs it."""

import json
import subprocess
import sys

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from utils.course import versions
from utils.paths import CONSTRAINTS, ROOT


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


def test_environment_yml_pip_section_is_satisfied_by_the_tested_set(tmp_path):
    """pip resolves the section offline against this environment (the tested set) and finds
    nothing to install but the course itself: no requirement there contradicts the policy."""
    reqs = tmp_path / "requirements.txt"
    # conda runs pip from the folder of environment.yml: make the paths absolute here.
    lines = [
        line.replace(" .[", f" {ROOT}[").replace("-c constraints.txt", f"-c {CONSTRAINTS}") for line in pip_section()
    ]
    reqs.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-index",
            "--no-build-isolation",
            "--report",
            str(report),
            "-r",
            str(reqs),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]] == [versions.COURSE]


def test_environment_yml_asks_for_torch_in_the_policy_range():
    [torch] = [Requirement(line) for line in pip_section() if not line.startswith("-")]
    assert torch.name == "torch" and torch.specifier == SpecifierSet(versions.PLATFORM["torch"])


def test_every_jupyterlab_setting_the_course_overrides_is_one_the_installed_jupyterlab_knows():
    """The course's JupyterLab settings (Markdown opens as a preview) name real plugins and properties: a misspelt
    key would be ignored without a word."""
    import json
    import sys
    from pathlib import Path

    overrides = json.loads(Path("scripts/jupyterlab-overrides.json").read_text())
    share = Path(sys.prefix, "share", "jupyter")
    for key, values in overrides.items():
        package, plugin = key.split(":")
        candidates = [
            share / "lab" / "schemas" / package / f"{plugin}.json",
            share / "labextensions" / package / "schemas" / package / f"{plugin}.json",
        ]
        schema = next((p for p in candidates if p.is_file()), None)
        assert schema is not None, f"no installed schema for {key}"
        known = json.loads(schema.read_text())["properties"]
        assert set(values) <= set(known), f"{key}: {set(values) - set(known)} unknown"
