"""CI does what the README tells a new user to do, in the README's order, and fails on a dirty tree."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from utils.paths import README, ROOT

FAKE_MAKE = """#!/usr/bin/env bash
echo "$*" >> "$CI_LOG"
if [ "$*" = "course" ] && [ -n "${DIRTY:-}" ]; then echo changed >> tracked.txt; fi
if [ "$*" = "test" ] && [ -n "${TESTS_FAIL:-}" ]; then exit 3; fi
exit 0
"""


def readme_commands() -> list[str]:
    block = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


@pytest.fixture
def clone(tmp_path):
    """A git repository holding .ci/run, with fake `make` and `chromium` first on PATH."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    (repo / "tracked.txt").write_text("as committed\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("make", FAKE_MAKE), ("chromium", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "fixture"], cwd=repo, check=True)
    env = {k: v for k, v in os.environ.items() if k != "CI_DURATIONS"}  # a run of the suite that records its times
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", CI_LOG=str(tmp_path / "make.log"))
    return repo, env, tmp_path / "make.log"


def run_ci(repo: Path, env: dict, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", ".ci/run"], cwd=repo, env={**env, **extra}, capture_output=True, text=True)


def test_the_readme_starts_with_the_two_commands_a_new_user_runs():
    assert readme_commands() == ["make course", "make test"]


def test_ci_runs_the_readmes_commands_in_the_readmes_order(clone):
    repo, env, log = clone
    result = run_ci(repo, env)
    assert result.returncode == 0, result.stderr
    assert [f"make {line}" for line in log.read_text().split()] == readme_commands()


def test_ci_installs_the_browser_while_the_course_runs_and_waits_for_it_before_the_tests(clone, tmp_path):
    repo, env, log = clone
    fake_apt = tmp_path / "bin" / "apt-get"  # the install takes a moment; the course starts meanwhile
    fake_apt.write_text(
        '#!/usr/bin/env bash\necho "apt-get $1" >> "$CI_LOG"\nsleep 1\necho "apt-get $1 done" >> "$CI_LOG"\n'
    )
    fake_apt.chmod(0o755)
    result = run_ci(repo, env, CI_CHROMIUM="no-such-browser")
    assert result.returncode == 0, result.stderr
    assert "installing Chromium from Debian for the browser test, while the course runs" in result.stdout
    steps = log.read_text().splitlines()
    assert steps.index("course") < steps.index("apt-get install done") < steps.index("test"), steps


def test_ci_goes_on_without_the_browser_when_it_cannot_be_installed(clone, tmp_path):
    repo, env, log = clone
    fake_apt = tmp_path / "bin" / "apt-get"
    fake_apt.write_text("#!/bin/sh\nexit 100\n")
    fake_apt.chmod(0o755)
    result = run_ci(repo, env, CI_CHROMIUM="no-such-browser")
    assert result.returncode == 0, result.stderr
    assert "Chromium could not be installed; the browser test will be skipped" in result.stdout
    assert log.read_text().split() == ["course", "test"]


def test_ci_fails_before_the_tests_when_running_the_course_changed_a_tracked_file(clone):
    repo, env, log = clone
    result = run_ci(repo, env, DIRTY="1")
    assert result.returncode != 0
    assert "tracked.txt" in result.stdout and "must leave the tree as it was" in result.stderr
    assert log.read_text().split() == ["course"]


def test_ci_hands_a_file_for_the_measured_test_times_to_make_test_only_when_asked(clone, tmp_path):
    repo, env, log = clone
    durations = tmp_path / "durations.json"
    assert run_ci(repo, env, CI_DURATIONS=str(durations)).returncode == 0
    assert log.read_text().splitlines()[-1] == f"test DURATIONS={durations}"


def test_ci_fails_when_the_tests_fail(clone):
    repo, env, _ = clone
    assert run_ci(repo, env, TESTS_FAIL="1").returncode == 3


def test_make_test_spreads_work_with_the_scheduler_the_test_suite_defines():
    """tests/conftest.py gives ``--dist loadfile`` its work units (a long run alone, the longest
    first); under any other mode the suite would fall back to xdist's own grouping."""
    from tests.conftest import work_unit

    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "-m pytest -n 2 --dist loadfile" in recipe

    second = "tests/test_lessons.py::test_each_lesson_runs_on_a_second_zoo_model_by_changing_its_model_line"
    assert work_unit(f"{second}[01.ipynb]") != work_unit(f"{second}[02.ipynb]")
    assert work_unit("solutions/01.ipynb::Cell 3") == work_unit("solutions/01.ipynb::Cell 4")
    assert work_unit("tests/test_paths.py::test_a") == work_unit("tests/test_paths.py::test_b")


def test_the_scheduler_hands_out_the_longest_units_first_whatever_their_number_of_tests():
    """xdist's own loadfile queue puts the units with the most tests first, so the single long
    notebook runs would come last and one worker would finish them alone; the suite's keeps the
    order of ``HEAVY_FIRST``."""
    from types import SimpleNamespace

    from _pytest.config import _prepareconfig

    from tests.conftest import pytest_collection_modifyitems, pytest_xdist_make_scheduler

    fresh = "tests/test_lessons.py::test_each_lessons_claims_hold_on_a_fresh_sample"
    many_short = [f"tests/test_paths.py::test_{i}" for i in range(30)]
    items = [
        SimpleNamespace(nodeid=i) for i in [*many_short, f"{fresh}[01]", "tests/test_evaluate.py::t", f"{fresh}[02]"]
    ]
    pytest_collection_modifyitems(None, items)
    collected = [i.nodeid for i in items]
    assert collected[:3] == ["tests/test_evaluate.py::t", f"{fresh}[01]", f"{fresh}[02]"]

    config = _prepareconfig(["--tx", "2*popen", "--dist", "loadfile", "-p", "no:cacheprovider", str(ROOT / "tests")])
    try:
        scheduler = pytest_xdist_make_scheduler(config, None)
        sent = {}

        class Worker:
            def __init__(self, name):
                self.gateway, self.shutting_down = SimpleNamespace(id=name), False

            def send_runtest_some(self, indices):
                sent.setdefault(self.gateway.id, []).extend(collected[i] for i in indices)

            def shutdown(self):
                self.shutting_down = True

        for worker in (Worker("gw0"), Worker("gw1")):
            scheduler.add_node(worker)
            scheduler.add_node_collection(worker, collected)
        scheduler.schedule()
    finally:
        config._ensure_unconfigure()
    first = {tests[0] for tests in sent.values()}
    assert first == {"tests/test_evaluate.py::t", f"{fresh}[01]"}, sent  # not the file of thirty short tests
