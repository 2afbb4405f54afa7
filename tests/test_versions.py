"""The version policy: platform packages (torch, numpy, matplotlib) may be any build in their
supported range, the course's libraries and the test suite's tools must be exactly the tested
versions, and every difference comes with the exact command that fixes it. Setup's decisions
(reuse a system torch, what to install) are checked here as data, and setup.sh by running it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from utils.course import versions
from utils.paths import CONSTRAINTS, ROOT

KERNEL = "/opt/kernel/bin/python"  # the interpreter the fixes are for
PINS = Path("platform-pins.txt")  # only named in the plan, never written


@pytest.fixture
def fake_installed(monkeypatch):
    """Makes ``versions.installed`` answer from the tested set (plus the course itself);
    call the fixture's value with changes such as ``transformer_lens="4.3.0"`` or ``sae_lens=None``."""
    table = {**versions.TESTED, versions.COURSE: "0.1.0"}
    monkeypatch.setattr(versions, "installed", table.get)

    def change(**changes: str | None) -> None:
        table.update({name.replace("_", "-"): version for name, version in changes.items()})

    return change


def pip(*args: str) -> list[str]:
    return [KERNEL, "-m", "pip", "install", "-q", *args]


# The policy


def test_the_tested_set_passes(fake_installed):
    assert versions.problems(python=KERNEL) == []


def test_a_cuda_build_of_another_torch_in_range_passes(fake_installed):
    fake_installed(torch="2.9.1+cu126")
    assert versions.problems(python=KERNEL) == []


def test_a_torch_below_the_range_stops_with_the_command_that_installs_one_in_range(fake_installed):
    fake_installed(torch="2.5.1+cu121")
    [problem] = versions.problems(python=KERNEL)
    assert str(problem) == "torch: installed 2.5.1+cu121, supported >=2.6,<3"
    assert problem.fix == f'"{KERNEL}" -m pip install "torch==2.13.0"'
    assert "--index-url https://download.pytorch.org/whl/cpu" in problem.hint
    assert versions.in_range(versions.TESTED["torch"], versions.PLATFORM["torch"])


def test_another_transformer_lens_stops_with_the_exact_fix(fake_installed):
    fake_installed(transformer_lens="4.3.0")
    [problem] = versions.problems(python=KERNEL)
    assert str(problem) == "transformer-lens: installed 4.3.0, tested 3.9.0"
    assert problem.fix == f'"{KERNEL}" -m pip install -c "{CONSTRAINTS}" "transformer-lens==3.9.0"'


def test_a_missing_package_is_reported_missing_with_its_install_command(fake_installed):
    fake_installed(sae_lens=None)
    [problem] = versions.problems(python=KERNEL)
    assert str(problem) == "sae-lens: missing, tested 6.54.12"
    assert problem.fix == f'"{KERNEL}" -m pip install -c "{CONSTRAINTS}" "sae-lens==6.54.12"'


@pytest.mark.parametrize("numpy", ["1.24.4", "3.0.0"])
def test_a_numpy_outside_its_range_stops_with_the_exact_fix(fake_installed, numpy):
    fake_installed(numpy=numpy)
    [problem] = versions.problems(python=KERNEL)
    assert str(problem) == f"numpy: installed {numpy}, supported >=1.26,<3"
    assert problem.fix == f'"{KERNEL}" -m pip install "numpy==2.4.6"'


def test_a_platform_numpy_and_matplotlib_other_than_the_tested_ones_pass(fake_installed):
    fake_installed(numpy="2.0.2", matplotlib="3.10.0")
    assert versions.problems(python=KERNEL) == []


def test_a_local_tag_on_a_course_library_still_counts_as_the_tested_version(fake_installed):
    fake_installed(transformers="5.23.0+local")
    assert versions.problems(python=KERNEL) == []


def test_only_the_packages_asked_about_are_checked(fake_installed):
    fake_installed(pytest=None)
    assert versions.problems(versions.RUNTIME, python=KERNEL) == []
    assert [p.package for p in versions.problems(python=KERNEL)] == ["pytest"]


def test_fixes_name_the_running_interpreter_by_default(fake_installed):
    fake_installed(plotly="5.0.0")
    assert versions.problems()[0].fix.startswith(f'"{sys.executable}" -m pip install')


@pytest.mark.parametrize(
    "version",
    [
        "2.5.1",
        "2.6.0",
        "2.9.1+cu126",
        "2.13.0+cpu",
        "2.99",
        "3.0.0",
        "3.1",
        "1.25.2",
        "1.26.0",
        "1.26.4",
        "2.4.6",
        "3.7.5",
        "3.8.0",
        "3.11.2",
        "4.0.0",
    ],
)
@pytest.mark.parametrize("package", sorted(versions.PLATFORM))
def test_the_range_check_agrees_with_pip(package, version):
    spec = versions.PLATFORM[package]
    assert versions.in_range(version, spec) is SpecifierSet(spec).contains(Version(version))


@pytest.mark.parametrize("version", [None, "", "not-a-version"])
def test_no_version_or_an_unreadable_one_is_out_of_range(version):
    assert versions.in_range(version, versions.PLATFORM["torch"]) is False


# The install files agree with the policy


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_pyproject_requires_each_platform_package_as_exactly_the_policy_range():
    requirements = {Requirement(d).name: Requirement(d).specifier for d in project()["dependencies"]}
    for package, spec in versions.PLATFORM.items():
        assert requirements[package] == SpecifierSet(spec), package
        assert versions.TESTED[package] in requirements[package]


def test_every_dependency_of_the_course_has_a_tested_version():
    runtime = {Requirement(d).name for d in project()["dependencies"]}
    dev = {Requirement(d).name for d in project()["optional-dependencies"]["dev"]}
    assert runtime == set(versions.RUNTIME)
    assert runtime | dev == set(versions.TESTED)


def test_constraints_file_is_generated_from_the_policy():
    assert CONSTRAINTS.read_text() == versions.constraints(), (
        "constraints.txt is stale: python -m utils.course.versions constraints > constraints.txt"
    )


def test_constraints_pin_every_course_library_and_no_platform_package():
    pinned = {Requirement(line).name: str(Requirement(line).specifier) for line in versions.constraints().split()}
    assert pinned == {p: f"=={v}" for p, v in versions.TESTED.items() if p not in versions.PLATFORM}


def test_installed_packages_are_the_tested_set():
    found = versions.problems()
    assert found == [], "\n".join(f"{p}\n  fix: {p.fix}" for p in found)
    assert versions.installed(versions.COURSE) is not None, "the course is not installed: make setup"


# What setup does, as data


def test_a_system_torch_in_range_is_reused_through_system_site_packages(fake_installed):
    fake_installed(torch="2.9.1+cu126")
    assert versions.venv_options() == ["--system-site-packages"]


@pytest.mark.parametrize("torch", [None, "2.3.1"])
def test_without_a_system_torch_in_range_the_environment_starts_empty(fake_installed, torch):
    fake_installed(torch=torch)
    assert versions.venv_options() == []


def test_a_conforming_environment_installs_nothing(fake_installed):
    fake_installed(torch="2.9.1+cu126", numpy="2.0.2")
    assert versions.setup_plan(KERNEL, PINS) == []


def test_a_package_removed_since_the_last_setup_is_reinstalled_with_the_constraints(fake_installed):
    fake_installed(tqdm=None)
    assert versions.setup_plan(KERNEL, PINS) == [pip("-c", str(CONSTRAINTS), "-c", str(PINS), "-e", f"{ROOT}[dev]")]


def test_a_course_that_is_not_installed_gets_installed(fake_installed):
    fake_installed(**{versions.COURSE: None})
    assert versions.setup_plan(KERNEL, PINS) == [pip("-c", str(CONSTRAINTS), "-c", str(PINS), "-e", f"{ROOT}[dev]")]


def test_without_torch_in_range_the_tested_torch_comes_first_from_the_given_index(fake_installed):
    fake_installed(torch="2.3.1", transformers=None)
    plan = versions.setup_plan(KERNEL, PINS, torch_index=versions.CPU_TORCH_INDEX)
    assert plan == [
        pip("torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"),
        pip("-c", str(CONSTRAINTS), "-c", str(PINS), "-e", f"{ROOT}[dev]"),
    ]
    assert "torch==2.13.0\n" in versions.platform_pins()


def test_a_numpy_out_of_range_is_replaced_by_the_tested_one(fake_installed):
    fake_installed(numpy="1.21.0")
    assert versions.setup_plan(KERNEL, PINS) == [
        pip("-c", str(CONSTRAINTS), "-c", str(PINS), "numpy==2.4.6", "-e", f"{ROOT}[dev]")
    ]


def test_platform_pins_hold_the_installed_builds_where_they_are(fake_installed):
    fake_installed(torch="2.9.1+cu126", numpy="2.0.2", matplotlib=None)
    assert versions.platform_pins() == "torch==2.9.1+cu126\nnumpy==2.0.2\nmatplotlib==3.11.2\n"


# Running it


def test_the_policy_runs_on_a_bare_python_before_anything_is_installed():
    bare = [sys._base_executable, "-S", "-E", "-m", "utils.course.versions"]  # no site-packages at all
    constraints = subprocess.run([*bare, "constraints"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert constraints.stdout == CONSTRAINTS.read_text()
    options = subprocess.run([*bare, "venv-options"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert options.stdout.strip() == ""  # no torch there: the new environment installs its own


def environment_seeing_this_one(make_venv, tmp_path: Path, leave_out: str = "") -> Path:
    """A virtual environment that sees this one's packages (except those whose names start
    with ``leave_out``) and whose ``python -m pip`` only records its arguments in pip.log."""

    def place(entry: Path, links: Path) -> None:
        if not (leave_out and entry.name.lower().startswith(leave_out)):
            (links / entry.name).symlink_to(entry)

    venv, site = make_venv("venv", place)
    (site / "pip").mkdir()
    (site / "pip" / "__init__.py").write_text("")
    (site / "pip" / "__main__.py").write_text(
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "constraints = [open(args[i + 1]).read() for i, a in enumerate(args) if a == '-c']\n"
        f"with open({str(tmp_path / 'pip.log')!r}, 'a') as log:\n"
        "    log.write(json.dumps({'args': args, 'constraints': constraints}) + '\\n')\n"
    )
    return venv


def run_setup_script(venv: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TORCH_INDEX_URL")}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")],
        env={**env, "VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_setup_script_does_nothing_when_the_environment_conforms(tmp_path, venv_seeing_this_environment):
    result = run_setup_script(environment_seeing_this_one(venv_seeing_this_environment, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "pip.log").exists()


def test_setup_script_reinstalls_a_package_removed_since_the_last_run(tmp_path, venv_seeing_this_environment):
    result = run_setup_script(environment_seeing_this_one(venv_seeing_this_environment, tmp_path, leave_out="tqdm"))
    assert result.returncode == 0, result.stderr
    assert "setup: tqdm: missing, tested 4.70.1" in result.stdout
    [call] = [json.loads(line) for line in (tmp_path / "pip.log").read_text().splitlines()]
    assert call["args"][:5] == ["install", "-q", "-c", str(CONSTRAINTS), "-c"]
    assert call["args"][6:] == ["-e", f"{ROOT}[dev]"]
    assert call["constraints"][0] == CONSTRAINTS.read_text()
    assert call["constraints"][1] == "".join(f"{p}=={versions.installed(p)}\n" for p in versions.PLATFORM)
