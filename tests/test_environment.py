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


def test_the_server_drops_an_empty_widget_state_and_keeps_a_real_one():
    from utils.course import lab

    empty = {"type": "notebook", "content": {"metadata": {"widgets": {lab.WIDGET_STATE: {"state": {}}}, "x": 1}}}
    lab.drop_empty_widget_state(empty, path="a.ipynb")
    assert empty["content"]["metadata"] == {"x": 1}
    real = {"type": "notebook", "content": {"metadata": {"widgets": {lab.WIDGET_STATE: {"state": {"id": {}}}}}}}
    lab.drop_empty_widget_state(real, path="b.ipynb")
    assert real["content"]["metadata"]["widgets"][lab.WIDGET_STATE]["state"] == {"id": {}}
    text = {"type": "file", "content": "widgets"}
    lab.drop_empty_widget_state(text, path="c.txt")
    assert text["content"] == "widgets"


def test_setup_names_the_hook_in_the_servers_settings_and_keeps_what_else_they_hold(tmp_path):
    import json

    from utils.course import lab

    config = tmp_path / "etc" / "jupyter" / "jupyter_server_config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"ServerApp": {"ip": "127.0.0.1"}}))
    assert lab.install(str(tmp_path)) == config
    settings = json.loads(config.read_text())
    assert settings == {"ServerApp": {"ip": "127.0.0.1"}, "ContentsManager": {"pre_save_hook": lab.HOOK}}
    from traitlets.utils.importstring import import_item

    assert import_item(lab.HOOK) is lab.drop_empty_widget_state
