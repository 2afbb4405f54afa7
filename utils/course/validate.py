"""The course's additions to nbval, the notebooks' validator (a pytest plugin, loaded by ``pyproject.toml``).

``pytest --nbval-lax solutions/`` runs every lesson in a fresh kernel, cell by cell; a cell that
raises fails, and the cells marked ``# NBVAL_CHECK_OUTPUT`` must print what the committed notebook
shows, once ``tests/sanitize.cfg`` has masked ids, addresses, timings and paths. This plugin adds,
only when asked:

* ``--course-keep DIR``: each executed notebook is kept in ``DIR`` (``make course`` keeps them in
  ``build/course-runs/``), stamped with the fingerprint of what it was run from and its first error,
  as :func:`utils.course.notebooks.execute` keeps its runs, so that the test suite reads the run
  instead of executing the lesson again.
* ``--course-record DIR``: one JSON file per notebook in ``DIR`` with its wall time, the kernel's peak
  memory and its first error (``make course`` reads them); with ``--course-table`` the run ends with
  a table of them, the device and torch's build (``make validate``).

Without either option nbval runs as it always does, with the course's sanitiser found from any
working folder.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from utils.course.notebooks import (
    ANSI,
    KEPT_RUN,
    PEAK_MEMORY_CODE,
    REAL_MODEL_TAG,
    CannotWrite,
    fingerprint,
    render,
    write_atomically,
)
from utils.paths import ROOT


def pytest_addoption(parser) -> None:
    group = parser.getgroup("course", "the course's notebook runs")
    group.addoption("--course-keep", type=Path, default=None, help="keep each executed notebook in this folder")
    group.addoption("--course-record", type=Path, default=None, help="write each notebook's time and memory here")
    group.addoption(
        "--course-table", action="store_true", help="end with the device and a table of the recorded notebooks"
    )


def pytest_configure(config) -> None:
    sanitiser = getattr(config.option, "nbval_sanitize_with", None)
    if sanitiser and not Path(sanitiser).is_absolute() and not Path(sanitiser).exists():
        config.option.nbval_sanitize_with = str(config.rootpath / sanitiser)  # found from any working folder
    config.stash[_RUNS] = {}


_RUNS = pytest.StashKey[dict]()


def _is_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def _run_of(item) -> dict:
    """What this plugin gathers about the notebook ``item`` is a cell of."""
    runs = item.config.stash[_RUNS]
    return runs.setdefault(
        str(item.path), {"start": time.time(), "cells": {}, "error": None, "failed": 0, "real_model": 0.0}
    )


def _kernel_peak_mb(kernel) -> float | None:
    """The kernel's own peak resident memory, asked of the kernel itself before it stops."""
    msg_id = kernel.execute_cell_input(PEAK_MEMORY_CODE, allow_stdin=False)
    printed = ""
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            msg = kernel.get_message("iopub", timeout=5)
        except Exception:  # queue.Empty: the kernel said nothing more
            break
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            printed += msg["content"]["text"]
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    found = re.search(r"COURSE_PEAK_MB ([\d.]+)", printed)
    return float(found.group(1)) if found else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    if _is_cell(item):
        _run_of(item)  # the clock starts before nbval starts the notebook's kernel


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _is_cell(item) or call.when != "call":
        return
    run = _run_of(item)
    run["cells"][item.cell_num] = (item.test_outputs or [], item.cell.execution_count)
    report = outcome.get_result()
    run["failed"] += report.failed
    if REAL_MODEL_TAG in item.cell.get("metadata", {}).get("tags", []):
        run["real_model"] += report.duration  # the "On a real model" section's own time
    if report.failed and run["error"] is None:
        text = ANSI.sub("", str(call.excinfo.value.args[0] if call.excinfo else report.longrepr)).strip()
        detail = getattr(call.excinfo.value, "inner_traceback", None) if call.excinfo else None
        raised = text == "Cell execution caused an exception" and detail and detail.strip()
        last = ANSI.sub("", detail).strip().splitlines()[-1] if raised else text.splitlines()[-1]
        run["error"] = f"{last[:280]} (code cell {item.cell_num})"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem) -> None:
    """After a notebook's last cell, before nbval stops its kernel: its time, memory and run."""
    if not _is_cell(item) or (nextitem is not None and nextitem.parent is item.parent):
        return
    options = item.config.option
    if options.course_keep is None and options.course_record is None:
        return
    run = _run_of(item)
    seconds = time.time() - run["start"]
    kernel = item.parent.kernel
    peak = _kernel_peak_mb(kernel) if kernel is not None and kernel.is_alive() else None
    path = Path(item.path)
    result = {
        "notebook": path.name,
        "seconds": round(seconds, 1),
        "peak_mb": round(peak) if peak else None,
        "error": run["error"],
        "cells": sum(c.cell_type == "code" for c in item.parent.nb.cells),
        "failed_cells": run["failed"],
        "real_model_seconds": round(run["real_model"], 1),
    }
    if options.course_keep is not None and (why := keep_run(item.parent.nb, run, path, options.course_keep)):
        result["not_kept"] = why
    if options.course_record is not None:
        Path(options.course_record).mkdir(parents=True, exist_ok=True)
        write_atomically(Path(options.course_record) / f"{path.stem}.json", json.dumps(result, indent=1) + "\n")


def keep_run(nb: nbformat.NotebookNode, run: dict, path: Path, folder: Path) -> str | None:
    """Keep the executed notebook (``nb`` with the outputs nbval gathered in ``run``) in ``folder``,
    stamped as :func:`utils.course.notebooks.execute` stamps its kept runs; None, or the sentence
    saying why it could not be kept (nothing half-written is left)."""
    ran = nbformat.from_dict(copy.deepcopy(nb))
    code = [cell for cell in ran.cells if cell.cell_type == "code"]
    for index, cell in enumerate(code):
        outputs, count = run["cells"].get(index, ([], None))
        cell.outputs = [nbformat.from_dict(copy.deepcopy(dict(o))) for o in outputs]
        cell.execution_count = count
        for out in cell.outputs:
            if out.output_type == "execute_result":
                out.setdefault("execution_count", count)
    ran.metadata[KEPT_RUN] = {"fingerprint": fingerprint(path), "error": run["error"]}
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_atomically(Path(folder) / path.name, render(ran), what="the run")
    except CannotWrite as e:
        return e.advice(None)
    except OSError as e:
        return f"cannot write into {folder}: {e.strerror or e}"
    return None


def read_records(folder: Path) -> list[dict]:
    """The per-notebook records a ``--course-record`` run wrote, in the notebooks' order."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(folder).glob("*.json"))]


def pytest_terminal_summary(terminalreporter, config) -> None:
    folder = config.option.course_record
    if folder is None or not config.option.course_table or hasattr(config, "workerinput"):
        return
    records = read_records(folder)
    if not records:
        return
    import torch

    from utils.model_zoo.models import default_device

    write = terminalreporter.write_line
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    write(
        f"device {default_device()}, torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
        f"{threads} thread(s) per kernel"
    )
    write(f"{'notebook':44s} {'s':>7s} {'peak MB':>8s}  result")
    for r in records:
        write(f"{r['notebook']:44s} {r['seconds']:7.1f} {r['peak_mb'] or 0:8d}  {r['error'] or 'ok'}")


def run(
    paths: list[Path], keep: Path | None = None, options: tuple[str, ...] = (), threads: int | None = None
) -> list[dict]:
    """Validate ``paths`` with nbval in one pytest process, each notebook in a fresh kernel, keeping
    each executed notebook in ``keep``; returns each notebook's record, in the order of ``paths``
    (``{"notebook", "seconds", "peak_mb", "error"}``, and ``"not_kept"`` when its run could not be
    kept). ``threads``: the kernels' OMP and MKL threads (they inherit pytest's environment), else this
    process's. pytest's output shows as it comes. Ctrl-C stops pytest, which shuts its kernel down, and
    is raised again here."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})}
    if "-n" in options:  # side by side, each test needs its own name: outside the root, every cell would be "::Cell 0"
        options = ("--rootdir", os.path.commonpath([str(Path(p).resolve().parent) for p in paths]), *options)
    with tempfile.TemporaryDirectory(prefix="course-record-") as record:
        command = [
            sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--nbval-lax", "--no-header",
            "-p", "no:cacheprovider", "--course-record", record, *(["--course-keep", str(keep)] if keep else []),
            *options, *(str(Path(p).resolve()) for p in paths),
        ]  # fmt: skip
        # In a session of its own, so that a terminal's Ctrl-C reaches this process alone, which then
        # stops pytest in order (its kernels shut down) and keeps pytest's own report of it off the screen.
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            for chunk in iter(lambda: os.read(proc.stdout.fileno(), 4096), b""):
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
            proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        found = {r["notebook"]: r for r in read_records(Path(record))}
    missing = f"did not run (pytest exited with {proc.returncode}: see its output above)"
    return [
        found.get(Path(p).name, {"notebook": Path(p).name, "seconds": None, "peak_mb": None, "error": missing})
        for p in paths
    ]


def main(argv: list[str] | None = None) -> int:
    """``make validate``: nbval over every lesson on whatever device is present, two threads per kernel
    and as many kernels side by side as the cores allow; prints the device, torch's build and each
    notebook's time, and with ``--record FILE`` writes them there as JSON."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m utils.course.validate", description=main.__doc__.split(";")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks to validate (default: all of solutions/)")
    ap.add_argument("--record", type=Path, help="write the device, the versions and every notebook's result here")
    args = ap.parse_args(argv)
    from utils.paths import SOLUTIONS

    paths = args.notebooks or sorted(SOLUTIONS.glob("*.ipynb"))
    cores = os.cpu_count() or 1
    threads = min(2, cores)  # more threads per kernel starve the kernels beside it (16 x 6 on 16 cores stalled)
    workers = max(1, min(len(paths), cores // threads))
    parallel = ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []
    print(f"validating {len(paths)} notebook(s) with nbval: {workers} kernel(s) side by side, {threads} thread(s) each")
    start = time.time()
    rows = run(paths, options=("--course-table", *parallel), threads=threads)
    wall = time.time() - start
    failed = [r for r in rows if r["error"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} notebooks passed in {wall:.0f} s")
    if args.record:
        import torch

        from utils.model_zoo.models import default_device

        device = default_device()
        name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform_name()
        record = {
            "device": device,
            "device_name": name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cores": cores,
            "kernels_side_by_side": workers,
            "threads_per_kernel": threads,
            "wall_seconds": round(wall, 1),
            "notebooks": rows,
        }
        write_atomically(args.record, json.dumps(record, indent=1) + "\n")
        print(f"recorded in {args.record}")
    return int(bool(failed))


def platform_name() -> str:
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
