"""make course: checks the zoo and runs every lesson, and leaves the tree exactly as it was."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from utils.course import notebooks as nbs
from utils.course import runner as course
from utils.course import validate
from utils.paths import ROOT


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def tree_state() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


def test_running_the_course_prints_the_table_writes_nothing_tracked_and_keeps_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(course, "COURSE_RUNS", tmp_path / "runs")
    before = tree_state()
    ok = notebook(tmp_path / "00_ok.ipynb", "x = 1")
    assert course.main(["--skip-zoo", str(ok)]) == 0
    out = capsys.readouterr().out
    assert "| 00_ok.ipynb |" in out
    assert out.rstrip().endswith(course.NEXT_STEP), "a successful run ends with how to open the course"
    assert tree_state() == before
    assert nbs.kept_run(ok, tmp_path / "runs") is not None, "the tests read the run make course kept"


def test_a_failing_notebook_fails_the_course_and_names_the_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(course, "COURSE_RUNS", tmp_path / "runs")
    bad = notebook(tmp_path / "01_bad.ipynb", "x = 1", "raise ValueError('the claim no longer holds')")
    assert course.main(["--skip-zoo", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: ValueError: the claim no longer holds" in out
    assert course.NEXT_STEP not in out, "a failed run does not send the learner on"


def test_every_built_zoo_model_loads_and_agrees_with_its_card(capsys):
    assert course.check_zoo() == 0, capsys.readouterr().out


def run_course(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "utils.course", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_bad_fresh_sample_stops_the_course_in_one_line_before_anything_runs():
    r = run_course("--skip-zoo", "solutions/00_orientation.ipynb", COURSE_FRESH_SAMPLE="0")
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("python -m utils.course: error: COURSE_FRESH_SAMPLE=0 is not a fresh sample's number")


def test_the_lessons_kernels_start_without_what_would_send_work_to_ndif(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(course, "COURSE_RUNS", tmp_path / "runs")
    monkeypatch.setenv("NDIF_API_KEY", "a-learners-key")  # set before starting Jupyter, as the appendix says
    saved = tmp_path / "config" / "nnsight" / "config.yaml"  # a key saved with nnsight's CONFIG.save()
    saved.parent.mkdir(parents=True)
    saved.write_text("API:\n  APIKEY: a-saved-key\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    nb = notebook(
        tmp_path / "A1_x.ipynb",
        "import os\nassert 'NDIF_API_KEY' not in os.environ",
        "from nnsight import CONFIG\nassert not CONFIG.API.APIKEY, CONFIG.API.APIKEY",
    )
    status = course.main(["--skip-zoo", str(nb)])
    out = capsys.readouterr().out
    assert status == 0, out
    (note,) = [line for line in out.splitlines() if "NDIF_API_KEY" in line]
    assert "offline" in note and "nothing" in note
    assert os.environ["NDIF_API_KEY"] == "a-learners-key" and "NNSIGHT_CONFIG" not in os.environ, "put back after"


def fake_validate(runs: list, not_kept: str | None = None):
    """Stands in for ``validate.run`` (nbval in a pytest process): records where the runs would be kept."""

    def run(paths, keep=None, options=(), threads=None):
        runs.append(keep)
        extra = {"not_kept": not_kept} if not_kept else {}
        return [{"notebook": Path(p).name, "seconds": 0.1, "peak_mb": 1, "error": None, **extra} for p in paths]

    return run


def test_a_checkout_where_build_cannot_be_written_runs_the_lessons_without_keeping_them(tmp_path, capsys, monkeypatch):
    (tmp_path / "build").write_text("")  # build/ cannot be made, as in a read-only checkout
    monkeypatch.setattr(course, "COURSE_RUNS", tmp_path / "build" / "course-runs")
    runs = []
    monkeypatch.setattr(course.validate, "run", fake_validate(runs))
    nb = notebook(tmp_path / "00_x.ipynb", "x = 1")
    assert course.main(["--skip-zoo", str(nb)]) == 0
    assert runs == [None]
    out = capsys.readouterr().out
    (note,) = [line for line in out.splitlines() if "course-runs" in line]
    assert "cannot be written" in note and "without keeping" in note


def test_a_full_disk_while_keeping_a_run_stops_the_course_in_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(course, "COURSE_RUNS", tmp_path / "runs")
    sentence = "the disk holding runs is full: the run needs 1.0 MB; nothing was left half-written: free some space"
    monkeypatch.setattr(course.validate, "run", fake_validate([], not_kept=sentence))
    nb = notebook(tmp_path / "00_x.ipynb", "x = 1")
    assert course.main(["--skip-zoo", str(nb)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "00_x.ipynb ran, but its run could not be kept" in line and line.endswith(sentence)


def test_a_run_that_does_not_fit_on_the_disk_is_not_kept_cut_and_says_so(tmp_path, monkeypatch):
    path = notebook(tmp_path / "00_x.ipynb", "x = 1")
    nb = nbformat.read(path, as_version=4)
    real = nbs.write_atomically

    def full(target, content, what=None):  # the disk fills up halfway: the real helper leaves nothing
        with nbs.atomic_file(target, what or "the run", len(content)) as file:
            file.write(content[: len(content) // 2].encode())
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(validate, "write_atomically", full)
    why = validate.keep_run(nb, {"cells": {}, "error": None}, path, tmp_path / "runs")
    assert why.startswith(f"the disk holding {tmp_path / 'runs'} is full") and why.endswith("run it again"), why
    assert list((tmp_path / "runs").iterdir()) == []
    monkeypatch.setattr(validate, "write_atomically", real)
    assert validate.keep_run(nb, {"cells": {}, "error": None}, path, tmp_path / "runs") is None
    assert nbs.kept_run(path, tmp_path / "runs") is not None


def test_ctrl_c_stops_the_course_in_one_line_and_leaves_no_kernel(tmp_path):
    pid_file = tmp_path / "kernel.pid"
    nb = notebook(
        tmp_path / "00_slow.ipynb",
        f"import os, pathlib\npathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))",
        "import time\ntime.sleep(120)",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "utils.course", "--skip-zoo", str(nb)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # Ctrl-C as in a terminal, even when the suite itself runs as a background job (which ignores SIGINT)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(1)  # the second cell is sleeping
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group, kernel included
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("python -m utils.course: interrupted")
    kernel = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(kernel, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the kernel {kernel} is still running")


def test_a_sweep_over_more_fresh_samples_than_there_are_is_refused_at_once(capsys):
    with pytest.raises(SystemExit) as e:
        course.main(["--reseed", "13", "solutions/00_orientation.ipynb"])
    assert e.value.code == 2
    assert (
        "argument --reseed: there are 12 fresh samples: give a number from 1 to 12, not '13'" in capsys.readouterr().err
    )


def test_make_course_runs_two_lessons_at_a_time_on_two_cores_with_one_thread_each():
    paths = [Path(f"{n:02d}_x.ipynb") for n in range(13)]
    assert course.side_by_side(paths, cores=2) == (2, 1)
    assert course.side_by_side(paths, cores=1) == (1, 1)
    assert course.side_by_side(paths, cores=16) == (4, 2), "four kernels at most, two threads each at most"
    assert course.side_by_side(paths[:1], cores=2) == (1, 2), "a single lesson gets both cores"


def test_lessons_side_by_side_start_with_the_slowest_recorded_and_come_back_in_the_order_asked(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(course, "COURSE_RUNS", tmp_path / "runs")
    monkeypatch.setattr(course, "side_by_side", lambda paths, cores=None: (2, 1))
    recorded = [{"notebook": "00_a.ipynb", "seconds": 5.0}, {"notebook": "01_b.ipynb", "seconds": 50.0}]
    monkeypatch.setattr(course.records, "recorded_notebooks", lambda: recorded)
    a = notebook(tmp_path / "00_a.ipynb", "import os\nassert os.environ['OMP_NUM_THREADS'] == '1'")
    b = notebook(tmp_path / "01_b.ipynb", "x = 2")
    assert course.longest_first([a, b]) == [b, a]
    assert course.main(["--skip-zoo", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "2 lessons 2 at a time, 1 thread(s) each" in out
    assert out.index("| 00_a.ipynb |") < out.index("| 01_b.ipynb |"), "the table keeps the lessons' order"
    assert nbs.kept_run(a, tmp_path / "runs") is not None and nbs.kept_run(b, tmp_path / "runs") is not None


def test_recording_the_lessons_times_runs_them_one_at_a_time(tmp_path, monkeypatch):
    runs = []

    def one_by_one(paths, keep=None, options=(), threads=None):
        runs.append((options, threads))
        return [{"notebook": Path(p).name, "seconds": 0.1, "peak_mb": 1, "error": None} for p in paths]

    monkeypatch.setattr(course.validate, "run", one_by_one)
    monkeypatch.setattr(course, "side_by_side", lambda paths, cores=None: (2, 1))
    paths = [notebook(tmp_path / f"0{n}_x.ipynb", "x = 1") for n in range(3)]
    assert [r["notebook"] for r in course.run_notebooks(paths, None, one_at_a_time=True)] == [p.name for p in paths]
    assert runs == [((), None)], "no -n: each lesson's time is its own"
    course.run_notebooks(paths, None)
    assert runs[-1] == (("-n", "2", "--dist", "loadfile"), 1), "two at a time, one thread each"
