import builtins
import contextlib
import errno
import functools
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The suite never touches the network: hub lookups fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Work units for ``pytest -n 2 --dist loadfile`` (``make test``). A file's tests share one
# worker (module fixtures load once), except these,
# each a long run (a whole notebook, a model's card) that is a unit of its own so that both
# workers share them:
OWN_UNITS = (
    "tests/test_solutions.py::test_each_solution_runs_through",
    "tests/test_lessons.py::test_each_lesson_runs_on_a_second_zoo_model",
    "tests/test_lessons.py::test_each_lessons_claims_hold_on_a_fresh_sample",
    "tests/test_evaluate.py::test_card_metrics_agree_with_a_fresh_small_sample",
    # each lesson off the zoo on a random model of one architecture (a whole notebook; on the Llama with
    # SmolLM2's 49,152-token vocabulary, lesson 05 takes about two minutes)
    "tests/test_off_the_zoo_circuits.py::test_each_circuits_lesson_runs_on_a_random_model",
    "tests/test_off_the_zoo_representations.py::test_each_representations_lesson_runs_on_a_random",
)
# The longest units go first, so that no worker is left running one while the other idles (the
# longest-first rule of scheduling: what is left at the end is short): the model cards' fresh samples and
# the browser's lessons (files of a few minutes each), the units above (the lessons on a second model, on a
# fresh sample and off the zoo among them; the lessons themselves, where make course has not just run them),
# then the files of a minute or two, then the rest in the order pytest collects them.
HEAVY_FIRST = (
    "tests/test_evaluate.py",
    "tests/test_browser.py",
    *OWN_UNITS,
    "tests/test_bundle.py",
    "tests/checks/test_lesson03_patching.py",
    "tests/test_bad_input.py",
    "tests/test_train.py",
    "tests/checks/test_lesson05_steering.py",
    "tests/checks/test_lesson04_probes.py",
)


def work_unit(nodeid: str) -> str:
    """The unit a test runs in: its own id for the tests named above, else its file."""
    return nodeid if nodeid.startswith(OWN_UNITS) else nodeid.split("::")[0]


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, with the units above, handed out in the order ``HEAVY_FIRST`` sorts them
    (pytest-xdist would otherwise queue the units with the most tests first, which puts the single
    long notebook runs last). (Its own ``loadgroup`` marks do not work with this pytest: the group
    suffix it writes never reaches the scheduler.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return Units(config, log)


# Every test has a time limit, set by its kind (the first whose prefixes its id starts with): a test that hangs fails
# at its limit, with the stack of every thread in its message, and the suite goes on. Each limit is three to four
# times the longest its kind took in the measured runs on a busy machine (docs/test-times.md; the measurements are in
# benchmarks/test-durations.json, and a test holds each limit to them). pyproject.toml's ``timeout`` bounds what no
# kind names: nbval's cells in make course.
TIME_LIMITS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("browser", ("tests/test_browser.py", "tests/test_site.py", "tests/test_colab_frames.py"), 240),
    ("model-card", ("tests/test_evaluate.py",), 600),
    (
        "whole-notebook",
        (
            *OWN_UNITS,
            "tests/test_bundle.py::test_lesson_00_runs_from_the_extracted_workshop_archive",
            "tests/test_unfinished_exercises.py",
        ),
        900,
    ),
    ("other", ("",), 360),
)


LIMIT_KIND = pytest.StashKey[str]()  # the kind whose limit a test was given (absent where its own mark sets one)


def time_limit(nodeid: str) -> tuple[str, int]:
    """(kind, seconds): the time limit of the test ``nodeid``, from ``TIME_LIMITS``."""
    return next((kind, seconds) for kind, prefixes, seconds in TIME_LIMITS if nodeid.startswith(prefixes))


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, p in enumerate(HEAVY_FIRST) if item.nodeid.startswith(p)), len(HEAVY_FIRST))

    items.sort(key=rank)


def pytest_itemcollected(item):
    if item.get_closest_marker("timeout") is None:  # a test's own mark wins
        item.stash[LIMIT_KIND], seconds = time_limit(item.nodeid)
        item.add_marker(pytest.mark.timeout(seconds))


def pytest_addoption(parser):
    parser.addoption(
        "--record-durations",
        metavar="FILE",
        help="add this run's measured times of each kind of test (how many, the longest and which) to the runs in "
        "FILE, JSON (benchmarks/test-durations.json, which a test holds TIME_LIMITS to)",
    )


MEASURED: dict[str, float] = {}  # test id -> seconds, setup, call and teardown together (for --record-durations)


def pytest_runtest_logreport(report):
    MEASURED[report.nodeid] = MEASURED.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    target = session.config.getoption("--record-durations", None)
    if not target or hasattr(session.config, "workerinput"):  # the workers' times reach the controller
        return
    kinds = {}
    for nodeid, seconds in sorted(MEASURED.items(), key=lambda kv: -kv[1]):
        kind = kinds.setdefault(time_limit(nodeid)[0], {"tests": 0, "longest_s": round(seconds, 1), "longest": nodeid})
        kind["tests"] += 1
    target = Path(target)
    runs = json.loads(target.read_text(encoding="utf-8"))["runs"] if target.is_file() else []  # earlier runs stay
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").is_file() else None
    runs.append({"recorded": time.strftime("%Y-%m-%d %H:%M"), "load_at_the_end": load, "kinds": kinds})
    target.write_text(json.dumps({"runs": runs}, indent=1) + "\n", encoding="utf-8")


def every_threads_stack() -> str:
    """Where each thread of this process is, innermost call last, as a traceback shows it."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"--- thread {names.get(ident, ident)} ---\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
    )


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item, settings):
    """pytest-timeout's signal method, with every thread's stack in the failure itself: a pytest-xdist worker has no
    terminal where the plugin's own dump would show. (Its cancel hook calls ``item.cancel_timeout``, set here.)"""
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own timer

    def fire(signum, frame):
        kind = item.stash.get(LIMIT_KIND, None)
        source = f"a {kind} test's limit in tests/conftest.py's TIME_LIMITS" if kind else "the test's own timeout mark"
        pytest.fail(
            f"{item.nodeid} was still running at its time limit of {settings.timeout:g} s ({source}). "
            f"Every thread's stack when it was stopped:\n{every_threads_stack()}"
        )

    def cancel():
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel
    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


@pytest.fixture
def venv_seeing_this_environment(tmp_path):
    """A factory for fresh virtual environments (without pip) that see this environment's
    installed packages through a folder of links.

    ``make(name, place=None)`` creates ``tmp_path / name`` and returns its folder and its
    site-packages; ``place(entry, links)`` decides how each installed entry appears in the
    links folder (by default, as a link; leaving it out hides the package).
    """

    def make(name: str, place: Callable[[Path, Path], None] | None = None) -> tuple[Path, Path]:
        venv = tmp_path / name
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = Path(
            subprocess.run(
                [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        links = tmp_path / f"{name}-packages"
        links.mkdir()
        for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
            if place is None:
                (links / entry.name).symlink_to(entry)
            else:
                place(entry, links)
        (site / "this_environment.pth").write_text(f"import site; site.addsitedir({str(links)!r})\n")
        return venv, site

    return make


@pytest.fixture
def copy_zoo_model(tmp_path, monkeypatch):
    """A factory: ``copy_zoo_model(name)`` copies a built zoo model into a folder of the test's
    own, points ``utils.paths.MODELS`` there for the rest of the test, and returns the copy."""
    from utils import paths

    def copy(name: str) -> Path:
        shutil.copytree(paths.MODELS / name, tmp_path / name)
        monkeypatch.setattr(paths, "MODELS", tmp_path)
        return tmp_path / name

    return copy


# Small random-weight models of the architectures a learner switches to, saved in the hub's format
# (save_pretrained: config.json, model.safetensors, a tokenizer) so that load_model(<folder>) loads them
# exactly as it would load the hub's checkpoints, offline. The Llama carries a real model's tokenizer,
# SmolLM2's (49,152 tokens, where most Storyworld names are two tokens or more), so that every lesson
# meets a vocabulary that is not the course's; the others carry the course's own.
ARCHITECTURES = ("gpt2", "llama", "gemma2", "qwen2")
REAL_TOKENIZER = "llama"  # the architecture whose random model has SmolLM2's tokenizer


def random_model_tokenizer(architecture: str):
    """The tokenizer ``save_random_model`` gives ``architecture``: SmolLM2's for the Llama, else Storyworld's."""
    import transformers

    from utils.model_zoo import pretrained
    from utils.paths import TOKENIZER_DIR

    if architecture == REAL_TOKENIZER:
        return transformers.AutoTokenizer.from_pretrained(str(pretrained.ensure()), local_files_only=True)
    return transformers.PreTrainedTokenizerFast.from_pretrained(str(TOKENIZER_DIR))


def save_random_model(architecture: str, folder: Path, layers: int = 2) -> Path:
    """A random ``architecture`` model (64 wide, 4 heads) with its tokenizer (above) in ``folder``."""
    import torch
    import transformers

    tokenizer = random_model_tokenizer(architecture)
    size = dict(vocab_size=len(tokenizer), max_position_embeddings=512, num_hidden_layers=layers)
    attention = dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)
    config = {
        "gpt2": lambda: transformers.GPT2Config(
            vocab_size=len(tokenizer), n_positions=512, n_embd=64, n_layer=layers, n_head=4
        ),
        "llama": lambda: transformers.LlamaConfig(**size, **attention, bos_token_id=0, eos_token_id=0, pad_token_id=0),
        "gemma2": lambda: transformers.Gemma2Config(**size, **attention, head_dim=16, sliding_window=256),
        "qwen2": lambda: transformers.Qwen2Config(**size, **attention),
    }[architecture]()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def random_model_folders(tmp_path_factory) -> dict[str, Path]:
    """{architecture: a folder holding a random-weight model of it in the hub's format}."""
    root = tmp_path_factory.mktemp("architectures")
    return {a: save_random_model(a, root / a) for a in ARCHITECTURES}


@pytest.fixture(params=ARCHITECTURES)
def random_model_folder(request, random_model_folders) -> Path:
    """Each architecture's random-weight folder in turn (a test that takes it runs once per architecture)."""
    return random_model_folders[request.param]


@pytest.fixture
def runs_off_the_zoo(tmp_path):
    """check(path, folder) executes a copy of a solutions notebook with its ``MODEL = ...`` line changed to
    ``folder``, as a learner would, and asserts that it runs to its end, that its model cell says once that
    the lesson's claims about the zoo model are reported rather than asserted, and that each claim that does
    not hold there (or that it did not check) names the model in one line. Returns those lines."""
    import re

    import nbformat

    from utils.course import notebooks as nbs

    def check(path: Path, folder: Path) -> list[str]:
        nb = nbs.without_real_model(nbformat.read(path, as_version=4))
        cell = [c for c in nb.cells if c.cell_type == "code"][1]
        cell.source, n = re.subn(r'^MODEL = "[^"]+"', f'MODEL = "{folder}"', cell.source, count=1, flags=re.M)
        assert n == 1, f"{path.name} has no MODEL line in its second code cell"
        copy = tmp_path / path.name
        nbformat.write(nb, copy)
        result = nbs.execute(copy, save=True)  # saved only when it runs through
        assert result["error"] is None, f"{path.name} on a random {folder.name}: {result['error']}"
        printed = [
            line
            for c in nbformat.read(copy, as_version=4).cells
            for out in c.get("outputs", [])
            if out.get("name") == "stdout"
            for line in out.get("text", "").splitlines()
        ]
        said = [line for line in printed if line.startswith(f"{folder} is not a zoo model")]
        assert len(said) == 1, "the model cell should say once that the lesson's claims are reported, not asserted"
        kinds = ("does not hold on", "cannot be evaluated on", "not checked on")
        reported = [line for line in printed if line.startswith(kinds)]
        assert all(any(line.startswith(f"{k} {folder}: ") for k in kinds) for line in reported), reported[:3]
        return reported

    return check


class SimulatedDisk:
    """Writes under ``folder`` fail as on a full disk (once ``free`` bytes are written: part of the last
    write lands, then ENOSPC) or in a folder the user may not write to (EACCES); ``interrupt(path)``
    says which file's opening a Ctrl-C stops. ``open`` and ``os.mkdir`` are patched, so it behaves the
    same on any machine and for root, whom file modes do not stop."""

    def __init__(self, monkeypatch, folder, *, free=None, writable=True, interrupt=None):
        self.folder, self.free = Path(folder).resolve(), free
        real_open, real_mkdir = builtins.open, os.mkdir

        def inside(path) -> bool:
            if isinstance(path, int):
                return False
            where = Path(os.fsdecode(path)).resolve()
            return where != self.folder and self.folder in where.parents

        def fake_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wxa+") and inside(file):
                if not writable:
                    raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(file))
                if interrupt is not None and interrupt(Path(os.fsdecode(file))):
                    raise KeyboardInterrupt
                return Budgeted(real_open(file, mode, *args, **kwargs), self)
            return real_open(file, mode, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if not writable and inside(path):
                raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)


class Budgeted:
    def __init__(self, file, disk):
        self._file, self._disk = file, disk

    def write(self, data):
        if self._disk.free is not None and len(data) > self._disk.free:
            self._file.write(data[: self._disk.free])
            self._file.flush()
            self._disk.free = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        if self._disk.free is not None:
            self._disk.free -= len(data)
        return self._file.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)


@pytest.fixture
def simulated_disk(monkeypatch):
    """``simulated_disk(folder, free=..., writable=..., interrupt=...)``: a :class:`SimulatedDisk` under ``folder``
    for this test (a full disk, a folder the user may not write to, Ctrl-C at a file's opening)."""
    return lambda folder, **how: SimulatedDisk(monkeypatch, folder, **how)


@contextlib.contextmanager
def _serving(folder: Path):
    """``folder`` on a loopback web server, as a browser would fetch it from where it is published; yields its
    base address."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


@pytest.fixture
def serving():
    """A context manager that serves a folder on loopback: ``with serving(folder) as base: ...``."""
    return _serving


# Headless Chromium for the browser tests, with the flags this closed network needs (without the background-networking
# ones Chromium's own requests are refused, many at a time) and every call bounded.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_processes() -> list:
    """Every Chromium process this process started (Playwright's driver starts them as its children)."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "chrom" in process.name().lower():
                found.append(process)
    return found


@contextlib.contextmanager
def chromium_deadline(seconds: float, what: str) -> Iterator[None]:
    """Stops every Chromium this process started if the block is still running after ``seconds``. A Playwright call
    with no timeout of its own (``evaluate`` of a promise that never settles, ``close``) then returns with an error,
    and the test fails naming ``what``, instead of waiting for ever."""
    import psutil

    fired = threading.Event()

    def stop():
        fired.set()
        for process in chromium_processes():
            with contextlib.suppress(psutil.Error):
                process.kill()

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()
    message = f"{what} was still waiting on Chromium after {seconds:g} s, so the test stopped Chromium"
    try:
        yield
    except Exception as error:
        if fired.is_set():
            pytest.fail(f"{message} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
        raise
    finally:
        timer.cancel()
    if fired.is_set():
        pytest.fail(message)


@contextlib.contextmanager
def _chromium(seconds: float = 240) -> Iterator:
    """A headless Chromium under Playwright for at most ``seconds``, closed within 30 s; every wait in it keeps
    Playwright's timeout (30 s, or the one the call names)."""
    from playwright.sync_api import sync_playwright

    with chromium_deadline(seconds, "the browser session"), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_FLAGS), timeout=60_000)
        try:
            yield browser
        finally:
            with chromium_deadline(30, "closing Chromium"):
                browser.close()


@pytest.fixture
def chromium():
    """``with chromium(seconds=240) as browser: ...``: headless Chromium, bounded (above)."""
    return _chromium
