import builtins
import contextlib
import errno
import functools
import http.server
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
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


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, p in enumerate(HEAVY_FIRST) if item.nodeid.startswith(p)), len(HEAVY_FIRST))

    items.sort(key=rank)


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
