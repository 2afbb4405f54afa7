"""The course bundle (``python -m utils.course.bundle``) and the setup cell's Colab path that installs
from it: one reproducible archive with its checksum; the cell fetches it once, checks the
checksum, extracts it next to the notebook and puts it on sys.path; lesson 00 then runs on a
simulated Colab runtime without replacing its torch."""

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import nbformat
import pytest
import tomllib
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from utils.course import bundle as bundler
from utils.course import notebook_setup as ns
from utils.course import notebooks as nbs
from utils.course.kernel_client import CourseNotebookClient
from utils.paths import ROOT, SOLUTIONS

NAME = bundler.bundle_name()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str, str]:
    """The bundle as ``make bundle`` writes it (into a temporary folder): its path, sha256 and printout."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "utils.course.bundle", "--out", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    archive = out / f"{NAME}.tar.gz"
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest(), result.stdout


# The bundle


def test_the_bundle_is_one_archive_named_after_the_version_with_its_checksum_printed_and_written(built):
    archive, digest, printed = built
    assert NAME == "handson-mechinterp-" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert digest in printed
    assert (archive.parent / f"{archive.name}.sha256").read_text() == f"{digest}  {archive.name}\n"
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name, f"{archive.name}.sha256"]


def test_the_bundle_holds_the_tracked_course_files_under_one_top_folder(built):
    with tarfile.open(built[0]) as tar:
        names = tar.getnames()
    assert all(n.startswith(f"{NAME}/") for n in names)
    inside = [n.removeprefix(f"{NAME}/") for n in names]
    tracked = subprocess.run(
        ["git", "ls-files", "--", *bundler.CONTENTS], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert inside == sorted(tracked)
    assert {
        "utils/course/notebook_setup.py",
        "utils/course/versions.py",
        "constraints.txt",
        "pyproject.toml",
        "README.md",
        "solutions/00_orientation.ipynb",
        "docs/figures/induction-circuit.svg",
    } <= set(inside)
    assert any(n.startswith("data/models/") for n in inside)
    assert not any(n.startswith(("tests/", "scripts/", ".venv/")) for n in inside)


def test_the_same_tree_gives_the_same_bytes(built, tmp_path):
    again = bundler.write_bundle(tmp_path)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == built[1]
    raw = again.read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "the gzip header carries no time"
    with tarfile.open(again) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}


def test_a_course_file_git_does_not_track_stops_the_bundle(tmp_path):
    repo = tmp_path / "repo"
    (repo / "utils").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", repo)
    (repo / "utils" / "tracked.py").write_text("")
    (repo / "utils" / "new_module.py").write_text("")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "pyproject.toml", "utils/tracked.py"], cwd=repo, check=True)
    with pytest.raises(bundler.BundleError, match="utils/new_module.py"):
        bundler.write_bundle(tmp_path / "dist", root=repo)
    assert not (tmp_path / "dist").exists()


def test_a_learners_own_notebook_copy_is_left_out_without_stopping_the_bundle(tmp_path):
    repo = tmp_path / "repo"
    (repo / "utils").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    shutil.copy(ROOT / "pyproject.toml", repo)
    (repo / "utils" / "tracked.py").write_text("")
    (repo / "notebooks" / "00_orientation.ipynb").write_text("{}")
    (repo / "notebooks" / "00_orientation-my-copy.ipynb").write_text("{}")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "pyproject.toml", "utils/tracked.py", "notebooks/00_orientation.ipynb"], cwd=repo)
    archive = bundler.write_bundle(tmp_path / "dist", root=repo)
    with tarfile.open(archive) as tar:
        inside = [n.split("/", 1)[1] for n in tar.getnames()]
    assert inside == ["notebooks/00_orientation.ipynb", "pyproject.toml", "utils/tracked.py"]


# The workshop's notebooks: stamped with the bundle's address, without solutions


def test_with_a_url_the_workshops_notebooks_are_the_exercises_without_solutions_stamped_with_it(
    workshop_built, tmp_path
):
    from utils.course.notebooks import build_without_solutions, read_notebook

    archive = workshop_built[0] / f"{WORKSHOP}.tar.gz"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    url = f"https://example.org/course/{archive.name}"
    folder = bundler.write_workshop(archive, url, digest, tmp_path / "workshop")
    plain = tmp_path / "plain"
    build_without_solutions(plain)
    names = sorted(p.name for p in folder.glob("*.ipynb"))
    assert names == sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))
    for name in names:
        stamped, unstamped = read_notebook(folder / name), read_notebook(plain / name)
        first = next(i for i, c in enumerate(stamped.cells) if c.cell_type == "code")
        assert stamped.cells[first].source == bundler.stamp(ns.SETUP_CELL, url, digest)
        assert f"COURSE_SOURCE = {url!r}" in stamped.cells[first].source
        assert f"COURSE_SHA256 = {digest!r}" in stamped.cells[first].source
        stamped.cells[first].source = ns.SETUP_CELL
        assert stamped == unstamped, f"{name}: only the first cell's two settings differ"
        assert not any("<summary>Solution" in c.source for c in stamped.cells), f"{name} holds a solution"
    assert url in (folder / "README.md").read_text() and digest in (folder / "README.md").read_text()


def test_the_workshops_readme_says_to_save_a_copy_in_drive_and_names_colabs_warning(workshop_built, tmp_path):
    archive = workshop_built[0] / f"{WORKSHOP}.tar.gz"
    folder = bundler.write_workshop(archive, f"https://example.org/{archive.name}", "0" * 64, tmp_path / "w")
    readme = (folder / "README.md").read_text()
    assert "Save a copy in Drive" in readme and "before typing anything" in readme
    assert "not authored by Google" in readme and "Run anyway" in readme
    assert "lead nowhere on Colab" in readme and "SITE=" in readme  # no site given: the dead links are named


def test_with_a_site_the_workshops_links_open_the_published_site(workshop_built, tmp_path):
    from utils.course.notebooks import read_notebook

    archive = workshop_built[0] / f"{WORKSHOP}.tar.gz"
    site = "https://example.org/course/"
    folder = bundler.write_workshop(archive, f"https://example.org/{archive.name}", "0" * 64, tmp_path / "w", site)
    text = " ".join(
        c.source for c in read_notebook(folder / "01_induction_heads.ipynb").cells if c.cell_type == "markdown"
    )
    assert f"]({site}docs/glossary.html#induction-head)" in text
    assert f"]({site}notebooks/README.html)" in text
    relative = re.findall(r"\]\((?![a-z]+:|#)([^)]+)\)", text)
    assert not relative, relative
    assert site in (folder / "README.md").read_text()


def test_a_site_that_is_not_a_web_address_is_refused(workshop_built, tmp_path):
    archive = workshop_built[0] / f"{WORKSHOP}.tar.gz"
    with pytest.raises(bundler.BundleError, match="not a web address"):
        bundler.write_workshop(archive, f"https://example.org/{archive.name}", "0" * 64, tmp_path / "w", "docs/")


def test_without_a_url_make_bundle_names_the_file_the_workshops_url_must_end_with(built):
    assert f"ending in {bundler.workshop_archive_name()}" in built[2]


def test_a_stamped_first_cell_fetches_checks_and_extracts_the_bundle_on_a_fake_colab(built, tmp_path, monkeypatch):
    archive, digest, _ = built
    cell = bundler.stamp(ns.SETUP_CELL, archive.as_uri(), digest)
    fetching = cell.split("from utils.course.notebook_setup import setup")[0]  # the rest is setup(), tested elsewhere
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.chdir(content)
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = types.ModuleType("google.colab")
    module.files = types.SimpleNamespace(upload=lambda: pytest.fail("a stamped cell never asks for an upload"))
    module.drive = types.SimpleNamespace(mount=lambda path: pytest.fail("a URL never mounts Drive"))
    monkeypatch.setitem(sys.modules, "google.colab", module)
    variables: dict = {}
    exec(fetching, variables)
    assert variables["course"] == str(content / NAME) and sys.path[0] == str(content / NAME)
    assert (content / NAME / "utils" / "course" / "notebook_setup.py").is_file()


def test_a_workshop_url_that_cannot_name_the_bundle_is_refused_before_anything_is_written(tmp_path, capsys):
    for url, why in [
        ("https://example.org/course.tar.gz", f"must end with the workshop archive's file name, {NAME}-workshop"),
        (f"ftp://example.org/{NAME}-workshop.tar.gz", "neither a web address"),
    ]:
        assert bundler.main(["--out", str(tmp_path), "--url", url]) == 1
        assert why in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_stamping_a_cell_that_lost_its_settings_says_so():
    with pytest.raises(bundler.BundleError, match='COURSE_SHA256 = ""'):
        bundler.stamp('COURSE_SOURCE = ""\n', "https://example.org/x.tar.gz", "ab")


# The workshop's own archive: the course without its solutions


WORKSHOP = f"{NAME}-workshop"
WORKSHOP_URL = f"https://example.org/course/{WORKSHOP}.tar.gz"


@pytest.fixture(scope="module")
def workshop_built(tmp_path_factory) -> tuple[Path, str]:
    """What ``make bundle URL=...`` writes (into a temporary folder): the folder and the printout."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "utils.course.bundle", "--out", str(out), "--url", WORKSHOP_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_with_a_url_both_archives_are_written_and_the_workshop_notebooks_fetch_the_one_without_solutions(
    workshop_built,
):
    out, printed = workshop_built
    assert {p.name for p in out.iterdir()} == {
        f"{NAME}.tar.gz",
        f"{NAME}.tar.gz.sha256",
        WORKSHOP,
        f"{WORKSHOP}.tar.gz",
        f"{WORKSHOP}.tar.gz.sha256",
    }
    digest = hashlib.sha256((out / f"{WORKSHOP}.tar.gz").read_bytes()).hexdigest()
    complete = hashlib.sha256((out / f"{NAME}.tar.gz").read_bytes()).hexdigest()
    assert (out / f"{WORKSHOP}.tar.gz.sha256").read_text() == f"{digest}  {WORKSHOP}.tar.gz\n"
    assert digest in printed and complete in printed
    for notebook in (out / WORKSHOP).glob("*.ipynb"):
        first = next(c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code")
        assert first.source == bundler.stamp(ns.SETUP_CELL, WORKSHOP_URL, digest), notebook.name
    readme = (out / WORKSHOP / "README.md").read_text()
    assert WORKSHOP_URL in readme and digest in readme and complete not in readme
    assert "without solutions" in readme


def test_the_workshop_archive_is_the_course_without_solutions_under_the_same_top_folder(built, workshop_built):
    from utils.course.notebooks import workshop_notebooks

    out, _ = workshop_built
    workshop, complete = members(out / f"{WORKSHOP}.tar.gz"), members(built[0])
    assert {name.split("/")[0] for name in workshop} == {NAME}, "the setup cell takes the top folder's name"
    withheld = [n for n in complete if n.startswith((f"{NAME}/solutions/", f"{NAME}/docs/facilitator/"))]
    assert withheld and not set(withheld) & set(workshop)
    exercises = {f"{NAME}/notebooks/{name}": text.encode() for name, text in workshop_notebooks().items()}
    assert sorted(workshop) == sorted(set(complete) - set(withheld))
    for name, content in workshop.items():
        assert content == exercises.get(name, complete[name]), name
    notebooks = [name for name in workshop if name.endswith(".ipynb")]
    assert sorted(notebooks) == sorted(exercises)
    for name in notebooks:
        cells = nbformat.reads(workshop[name].decode(), as_version=4).cells
        assert not any("<summary>Solution" in c.source or "### BEGIN SOLUTION" in c.source for c in cells), name


def test_the_workshop_archive_is_reproducible(workshop_built, tmp_path):
    again = bundler.write_workshop_bundle(tmp_path)
    assert again.read_bytes() == (workshop_built[0] / f"{WORKSHOP}.tar.gz").read_bytes()


@pytest.fixture(scope="module")
def extracted_workshop(workshop_built, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("content")
    with tarfile.open(workshop_built[0] / f"{WORKSHOP}.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    return folder / NAME


def lesson_imports() -> list[str]:
    """The modules of ``utils`` that the lessons' code cells import."""
    found = set()
    for path in SOLUTIONS.glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                found |= set(re.findall(r"^\s*(?:from|import) (utils[\w.]*)", cell.source, re.MULTILINE))
    return sorted(found)


def test_no_module_a_lesson_imports_reads_the_solutions(extracted_workshop):
    code = (
        "import importlib, json, sys\n"
        f"for name in {lesson_imports()!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items() if n.startswith('utils')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=extracted_workshop.parent,
        env={**os.environ, "PYTHONPATH": str(extracted_workshop)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert len(loaded) > 20
    for name, file in loaded.items():
        assert file is None or Path(file).is_relative_to(extracted_workshop), (name, file)
        source = Path(file).read_text() if file else ""
        uses = [line for line in source.splitlines() if "SOLUTIONS" in line or '"solutions"' in line]
        assert name == "utils.paths" or uses == [], f"{name} reads the solutions: {uses}"


@pytest.mark.slow
def test_lesson_00_runs_from_the_extracted_workshop_archive(extracted_workshop, tmp_path):
    lesson = nbs.without_real_model(nbformat.read(SOLUTIONS / "00_orientation.ipynb", as_version=4))
    lesson.cells.append(
        nbformat.v4.new_code_cell(
            "import pathlib, utils\n"
            f"assert pathlib.Path(utils.__file__).is_relative_to({str(extracted_workshop)!r}), utils.__file__\n"
            f"assert not pathlib.Path({str(extracted_workshop)!r}, 'solutions').exists()"
        )
    )
    (tmp_path / "content").mkdir()
    nbformat.write(lesson, tmp_path / "content" / "00_orientation.ipynb")
    result = nbs.execute(tmp_path / "content" / "00_orientation.ipynb", env={"PYTHONPATH": str(extracted_workshop)})
    assert result["error"] is None, result


def test_a_url_with_a_scheme_in_capitals_is_accepted():
    for url in (f"HTTPS://example.org/{WORKSHOP}.tar.gz", f"Http://example.org/{WORKSHOP}.tar.gz"):
        bundler.check_source(url, f"{WORKSHOP}.tar.gz")


def test_a_workshop_url_naming_the_complete_archive_is_refused_before_anything_is_written(tmp_path, capsys):
    url = f"https://example.org/course/{NAME}.tar.gz"
    assert bundler.main(["--out", str(tmp_path), "--url", url]) == 1
    assert capsys.readouterr().err == (
        f"bundle: --url {url!r} must end with the workshop archive's file name, {WORKSHOP}.tar.gz: the workshop's "
        f"notebooks fetch the course without its solutions, and {NAME}.tar.gz is the complete one, for "
        "self-learners\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_workshop_notebooks_are_stamped_only_for_the_archive_without_solutions(built, tmp_path):
    archive, digest, _ = built
    with pytest.raises(bundler.BundleError, match="without solutions"):
        bundler.write_workshop(archive, f"https://example.org/{archive.name}", digest, tmp_path / "workshop")
    assert list(tmp_path.iterdir()) == []


# A full disk, an unwritable folder, Ctrl-C: one sentence, nothing half-written


def test_a_bundle_on_a_full_disk_leaves_nothing_and_says_how_much_it_needs(
    simulated_disk, built, tmp_path, monkeypatch, capsys
):
    dist = tmp_path / "dist"
    dist.mkdir()
    simulated_disk(dist, free=5_000_000)
    usage = shutil.disk_usage(tmp_path)._replace(free=5_000_000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)
    assert bundler.main(["--out", str(dist)]) == 1
    size = built[0].stat().st_size / 1e6
    assert capsys.readouterr().err == (
        f"bundle: the disk holding {dist} is full: the archive needs {size:.1f} MB and it has 5.0 MB free; "
        "nothing was left half-written: free some space, or pass --out a folder on another disk\n"
    )
    assert list(dist.iterdir()) == []


@pytest.mark.parametrize("exists", [True, False])
def test_a_bundle_into_a_folder_it_may_not_write_is_refused_in_one_sentence(
    simulated_disk, tmp_path, monkeypatch, capsys, exists
):
    folder = tmp_path / "read-only"
    folder.mkdir()
    out = folder if exists else folder / "sub"
    simulated_disk(folder, writable=False)
    assert bundler.main(["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"bundle: cannot write the archive into {out}: Permission denied; pass --out a folder you can write to\n"
    )
    assert list(folder.iterdir()) == []


def test_a_bundle_into_a_file_says_it_is_a_file(tmp_path, capsys):
    (tmp_path / "README.md").write_text("notes\n")
    assert bundler.main(["--out", str(tmp_path / "README.md")]) == 1
    assert capsys.readouterr().err == (
        f"bundle: --out {tmp_path / 'README.md'} is a file, not a folder; pass --out a folder you can write to\n"
    )


@pytest.mark.parametrize("before", ["nothing", "a complete workshop folder"])
def test_ctrl_c_while_the_workshop_notebooks_are_written_leaves_the_folder_whole_or_absent(
    simulated_disk, workshop_built, tmp_path, monkeypatch, capsys, before
):
    dist = tmp_path / "dist"
    dist.mkdir()
    if before != "nothing":
        shutil.copytree(workshop_built[0] / WORKSHOP, dist / WORKSHOP)
    old = {p.name: p.read_bytes() for p in (dist / WORKSHOP).iterdir()} if before != "nothing" else None
    notebooks = []

    def fourth_notebook(path: Path) -> bool:
        notebooks.extend([path.name] if path.suffix == ".ipynb" else [])
        return len(notebooks) == 4

    simulated_disk(dist, interrupt=fourth_notebook)
    try:
        status = bundler.main(["--out", str(dist), "--url", WORKSHOP_URL])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended in a traceback")
    assert status == 130 and len(notebooks) == 4
    err = capsys.readouterr().err
    assert err.startswith("bundle: interrupted") and err.count("\n") == 1, err
    left = sorted(p.name for p in dist.iterdir())
    assert set(left) <= {
        f"{NAME}.tar.gz",
        f"{NAME}.tar.gz.sha256",
        f"{WORKSHOP}.tar.gz",
        f"{WORKSHOP}.tar.gz.sha256",
        WORKSHOP,
    }
    if before == "nothing":
        assert WORKSHOP not in left
    else:
        assert {p.name: p.read_bytes() for p in (dist / WORKSHOP).iterdir()} == old


# The setup cell's fetch, on a fake Colab


def small_bundle(folder: Path, name: str = "handson-mechinterp-9.9.9") -> tuple[Path, str]:
    """A bundle-shaped archive holding ``<name>/utils/__init__.py``, ``<name>/utils/course/notebook_setup.py``
    and ``<name>/README.md``; its path and sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member, text in [
            ("utils/__init__.py", b"MARK = 'from the bundle'\n"),
            ("utils/course/notebook_setup.py", b"SETUP = 'from the bundle'\n"),
            ("README.md", b"course\n"),
        ]:
            info = tarfile.TarInfo(f"{name}/{member}")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


@pytest.fixture
def notebook_dir(tmp_path, monkeypatch) -> Path:
    """An empty folder as the notebook's working directory; sys.path is restored afterwards."""
    folder = tmp_path / "content"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return folder


@pytest.fixture
def colab(monkeypatch) -> types.SimpleNamespace:
    """A fake ``google.colab``; ``colab.uploads`` and ``colab.mounts`` record what the cell asked for."""
    seen = types.SimpleNamespace(uploads=[], mounts=[], upload_from=None)

    def upload() -> dict[str, bytes]:
        seen.uploads.append(seen.upload_from.name)
        shutil.copy(seen.upload_from, Path.cwd())  # Colab saves the uploaded file in the working directory
        return {seen.upload_from.name: seen.upload_from.read_bytes()}

    module = types.ModuleType("google.colab")
    module.files = types.SimpleNamespace(upload=upload)
    module.drive = types.SimpleNamespace(mount=seen.mounts.append)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    return seen


def fetch(source: str, sha256: str = "") -> dict:
    """Run the Colab part of the setup cell with these settings; returns the cell's variables."""
    variables = {"COURSE_SOURCE": source, "COURSE_SHA256": sha256}
    exec(ns.COLAB_FETCH, variables)
    return variables


def test_a_bundle_path_is_extracted_next_to_the_notebook_and_put_on_sys_path(tmp_path, notebook_dir, colab):
    archive, digest = small_bundle(tmp_path / "drive")
    course = Path(fetch(str(archive), digest)["course"])
    assert course == notebook_dir / "handson-mechinterp-9.9.9"
    assert (course / "utils" / "__init__.py").read_text() == "MARK = 'from the bundle'\n"
    assert sys.path[0] == str(course)
    assert Path.cwd() == notebook_dir


def test_running_the_cell_again_reuses_the_extraction(tmp_path, notebook_dir, colab):
    archive, digest = small_bundle(tmp_path / "drive")
    course = Path(fetch(str(archive), digest)["course"])
    (course / "utils" / "__init__.py").write_text("changed after extraction\n")
    assert Path(fetch(str(archive), digest)["course"]) == course
    assert (course / "utils" / "__init__.py").read_text() == "changed after extraction\n"
    assert sys.path.count(str(course)) == 1


def test_a_cut_off_bundle_leaves_nothing_behind_and_the_whole_one_then_extracts(tmp_path, notebook_dir, colab):
    archive, digest = small_bundle(tmp_path / "drive")
    cut = tmp_path / "cut" / archive.name
    cut.parent.mkdir()
    cut.write_bytes(archive.read_bytes()[:-60])  # an upload or copy that stopped early, no checksum set
    with pytest.raises(RuntimeError, match="is damaged or cut off .*nothing was extracted: delete it"):
        fetch(str(cut))
    assert list(notebook_dir.iterdir()) == []
    course = Path(fetch(str(archive), digest)["course"])
    assert (course / "utils" / "__init__.py").read_text() == "MARK = 'from the bundle'\n"


def test_a_source_that_is_not_there_is_named_in_one_sentence(notebook_dir, colab):
    with pytest.raises(FileNotFoundError, match="COURSE_SOURCE '/nonexistent/bundle.tar.gz' is not a file"):
        fetch("/nonexistent/bundle.tar.gz")


def test_a_download_that_fails_names_the_url_and_leaves_nothing(tmp_path, notebook_dir, colab):
    url = (tmp_path / "host" / "handson-mechinterp-9.9.9.tar.gz").as_uri()  # nothing there
    with pytest.raises(RuntimeError, match=f"downloading {url} failed .*run this cell again"):
        fetch(url)
    assert list(notebook_dir.iterdir()) == []


def test_a_checksum_is_accepted_in_capitals_and_with_spaces(tmp_path, notebook_dir, colab):
    archive, digest = small_bundle(tmp_path / "drive")
    fetch(str(archive), f" {digest.upper()}\n")
    assert (notebook_dir / "handson-mechinterp-9.9.9").is_dir()


def test_a_wrong_checksum_is_refused_before_anything_is_extracted(tmp_path, notebook_dir, colab):
    archive, digest = small_bundle(tmp_path / "drive")
    with pytest.raises(ValueError, match="nothing was extracted"):
        fetch(str(archive), "0" * 64)
    assert list(notebook_dir.iterdir()) == []


def test_with_no_source_the_learner_is_asked_once_to_upload_the_bundle(tmp_path, notebook_dir, colab):
    colab.upload_from, _ = small_bundle(tmp_path / "laptop")
    fetch("")
    fetch("")
    assert colab.uploads == ["handson-mechinterp-9.9.9.tar.gz"]
    assert sorted(p.name for p in notebook_dir.iterdir()) == [
        "handson-mechinterp-9.9.9",
        "handson-mechinterp-9.9.9.tar.gz",
    ]


def test_a_path_on_drive_mounts_drive_when_it_is_not_there_yet(notebook_dir, colab):
    with pytest.raises(FileNotFoundError):  # the fake mount makes nothing appear
        fetch("/content/drive/MyDrive/handson-mechinterp-9.9.9.tar.gz")
    assert colab.mounts == ["/content/drive"]


def test_a_url_is_downloaded_once_next_to_the_notebook(tmp_path, notebook_dir, colab):
    archive, digest = small_bundle(tmp_path / "host")
    fetch(archive.as_uri(), digest)
    archive.unlink()  # a second download would now fail
    fetch(archive.as_uri(), digest)
    assert sorted(p.name for p in notebook_dir.iterdir()) == [
        "handson-mechinterp-9.9.9",
        "handson-mechinterp-9.9.9.tar.gz",
    ]


@pytest.mark.parametrize("source", ["git+https://example.org/course.git", "git+https://example.org/course.git@main"])
def test_an_unpinned_git_url_is_refused_with_how_to_pin_it(notebook_dir, colab, source):
    with pytest.raises(ValueError) as error:
        fetch(source)
    assert "git+https://example.org/course.git@v0.1.0" in str(error.value)
    assert "@<commit>" in str(error.value)
    assert list(notebook_dir.iterdir()) == []


@pytest.mark.parametrize("pin", ["tag", "commit"])
def test_a_git_url_pinned_to_a_tag_or_commit_is_cloned_at_that_point(tmp_path, notebook_dir, colab, pin):
    repo = tmp_path / "course"
    (repo / "utils").mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=Host", "-c", "user.email=host@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "utils" / "__init__.py").write_text("RELEASE = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "release"], check=True)
    subprocess.run([*git, "tag", "v0.1.0"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (repo / "utils" / "__init__.py").write_text("RELEASE = 2\n")
    subprocess.run([*git, "commit", "-q", "-am", "later"], check=True)
    ref = "v0.1.0" if pin == "tag" else commit
    course = Path(fetch(f"git+{repo.as_uri()}@{ref}")["course"])
    assert course == notebook_dir / f"course-{ref}"
    assert (course / "utils" / "__init__.py").read_text() == "RELEASE = 1\n"
    assert sys.path[0] == str(course)


# The setup cell's fetch never deletes what it did not make: every member is checked before anything
# is written, the bundle is extracted into a new folder of the cell's own, and an existing course
# folder is never deleted or overwritten. Each test has a learner's notebook beside the one that runs.


@pytest.fixture
def learners_files(notebook_dir: Path) -> Path:
    """The learner's own notebook, beside the one whose setup cell runs."""
    notes = notebook_dir / "my_notes.ipynb"
    notes.write_text('{"cells": ["my answers"]}')
    return notes


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def hostile_bundle(path: Path, members: list[tuple[str, object]]) -> tuple[Path, str]:
    """An archive at ``path`` holding ``members`` in this order: (name, bytes) a file, (name, None) a
    folder, (name, ("symlink", target)) a link, (name, ("device", 0)) a character device; its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, what in members:
            info = tarfile.TarInfo(name)
            if what is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif isinstance(what, tuple) and what[0] == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, what[1]
            elif isinstance(what, tuple):
                info.type = tarfile.CHRTYPE
            else:
                info.size = len(what)
            tar.addfile(info, io.BytesIO(what) if isinstance(what, bytes) else None)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


GOOD = [("handson-mechinterp-9.9.9/utils/__init__.py", b"MARK = 'from the bundle'\n")]


def refused(tmp_path: Path, archive: Path, digest: str, why: str) -> None:
    """The cell refuses ``archive`` in one sentence saying ``why``, and nothing on disk changes."""
    before = tree(tmp_path)
    with pytest.raises(Exception) as error:
        fetch(str(archive), digest)
    assert tree(tmp_path) == before, "something on disk changed"
    message = str(error.value)
    assert error.type is ValueError and why in message and message.endswith("nothing was extracted"), message
    assert "damaged or cut off" not in message and "\n" not in message


def test_a_bundle_whose_first_member_climbs_out_is_refused_and_nothing_is_deleted(
    tmp_path, notebook_dir, colab, learners_files
):
    archive, digest = hostile_bundle(tmp_path / "drive" / "b.tar.gz", [("../ESCAPED_FIRST", b"x"), *GOOD])
    refused(tmp_path, archive, digest, "holds '../ESCAPED_FIRST', a path outside its folder")
    assert learners_files.read_text() == '{"cells": ["my answers"]}'


def test_a_bundle_whose_first_member_is_an_absolute_path_is_refused_and_nothing_is_deleted(
    tmp_path, notebook_dir, colab, learners_files
):
    outside = tmp_path / "ESCAPED_ABS_FIRST"
    archive, digest = hostile_bundle(tmp_path / "drive" / "b.tar.gz", [(str(outside), b"x"), *GOOD])
    refused(tmp_path, archive, digest, f"holds {str(outside)!r}, a path outside its folder")
    assert not outside.exists() and learners_files.read_text() == '{"cells": ["my answers"]}'


def test_a_bundle_packed_from_inside_its_folder_is_refused_with_how_to_pack_it(
    tmp_path, notebook_dir, colab, learners_files
):
    packed = tmp_path / "packed"
    small_bundle(tmp_path / "laptop")
    with tarfile.open(tmp_path / "laptop" / "handson-mechinterp-9.9.9.tar.gz") as tar:
        tar.extractall(packed, filter="data")
    archive = tmp_path / "drive" / "handson-mechinterp-9.9.9.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:  # as `tar -C packed -czf bundle.tar.gz .` packs it
        tar.add(packed, arcname=".")
    with tarfile.open(archive) as tar:
        assert tar.getnames()[:2] == [".", "./handson-mechinterp-9.9.9"]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    refused(tmp_path, archive, digest, "was packed from inside its folder (as `tar -C folder .` does): make it with")
    assert learners_files.read_text() == '{"cells": ["my answers"]}'


def test_a_bundle_whose_folder_is_not_the_courses_is_refused_and_a_folder_of_that_name_is_kept(
    tmp_path, notebook_dir, colab, learners_files
):
    (notebook_dir / "drive").mkdir()  # on Colab, where the cell mounts Google Drive
    (notebook_dir / "drive" / "thesis.txt").write_text("mine")
    archive, digest = hostile_bundle(tmp_path / "laptop" / "b.tar.gz", [("drive/utils/__init__.py", b"x")])
    refused(tmp_path, archive, digest, "holds 'drive/utils/__init__.py', outside a folder named handson-mechinterp-")
    assert (notebook_dir / "drive" / "thesis.txt").read_text() == "mine"
    assert sorted(p.name for p in (notebook_dir / "drive").iterdir()) == ["thesis.txt"]


@pytest.mark.parametrize(
    "members, why",
    [
        ([*GOOD, ("handson-mechinterp-9.9.9/../../ESCAPED", b"x")], "'handson-mechinterp-9.9.9/../../ESCAPED', a path"),
        ([*GOOD, ("/ESCAPED_ABS", b"x")], "holds '/ESCAPED_ABS', a path outside its folder"),
        (
            [*GOOD, ("handson-mechinterp-9.9.9/l", ("symlink", "/etc"))],
            "'handson-mechinterp-9.9.9/l', a link to '/etc'",
        ),
        ([*GOOD, ("handson-mechinterp-9.9.9/l", ("symlink", "../.."))], "a link to '../..', outside its folder"),
        ([*GOOD, ("handson-mechinterp-9.9.0/x", b"x")], "holds two folders, handson-mechinterp-9.9.9 and"),
        ([*GOOD, ("handson-mechinterp-9.9.9/tty", ("device", 0))], "neither a file, a folder nor a link"),
    ],
    ids=["climbs-out", "absolute", "absolute-link", "link-out", "two-folders", "device"],
)
def test_a_bundle_with_a_bad_member_after_good_ones_is_refused_before_anything_is_written(
    tmp_path, notebook_dir, colab, learners_files, members, why
):
    archive, digest = hostile_bundle(tmp_path / "drive" / "b.tar.gz", members)
    refused(tmp_path, archive, digest, why)


def test_a_course_extracted_by_hand_and_filled_in_is_used_as_it_is(
    tmp_path, notebook_dir, colab, learners_files, capsys
):
    archive, digest = small_bundle(tmp_path / "drive")
    with tarfile.open(archive) as tar:  # `!tar xzf` in a cell: no marker of the setup cell's
        tar.extractall(notebook_dir, filter="data")
    answers = notebook_dir / "handson-mechinterp-9.9.9" / "notebooks" / "05_steering.ipynb"
    answers.parent.mkdir()
    answers.write_text("the learner's answers")
    before = tree(tmp_path)
    for _ in range(2):
        course = Path(fetch(str(archive), digest)["course"])
        assert course == notebook_dir / "handson-mechinterp-9.9.9" and sys.path[0] == str(course)
        assert (
            capsys.readouterr().out
            == "Using handson-mechinterp-9.9.9 as it is: it was extracted before, not by this cell\n"
        )
    assert tree(tmp_path) == before


def test_a_folder_of_the_courses_name_that_is_not_a_whole_course_is_kept_and_named(
    tmp_path, notebook_dir, colab, learners_files
):
    archive, digest = small_bundle(tmp_path / "drive")
    (notebook_dir / "handson-mechinterp-9.9.9").mkdir()  # made by hand, or left by an older cell: no utils/
    (notebook_dir / "handson-mechinterp-9.9.9" / "draft.py").write_text("mine")
    before = tree(tmp_path)
    with pytest.raises(FileExistsError) as error:
        fetch(str(archive), digest)
    assert str(error.value) == (
        f"{notebook_dir / 'handson-mechinterp-9.9.9'} is in the way: it is not a whole course, and this cell "
        "changes nothing in it; move or rename it, then run this cell again"
    )
    assert tree(tmp_path) == before


def test_an_extraction_that_fails_halfway_leaves_nothing_behind(tmp_path, notebook_dir, colab, learners_files):
    archive, digest = hostile_bundle(  # a file, then a file inside it as if it were a folder
        tmp_path / "drive" / "b.tar.gz",
        [*GOOD, ("handson-mechinterp-9.9.9/data", b"x"), ("handson-mechinterp-9.9.9/data/y", b"y")],
    )
    before = tree(tmp_path)
    with pytest.raises(RuntimeError, match=r"^extracting .*b\.tar\.gz failed \(.*\); nothing was kept"):
        fetch(str(archive), digest)
    assert tree(tmp_path) == before


def test_only_the_cells_own_leftover_staging_folders_are_removed(tmp_path, notebook_dir, colab, learners_files):
    archive, digest = small_bundle(tmp_path / "drive")
    left = notebook_dir / ".extracting-handson-mechinterp-abc123"  # an interrupted run's, with its marker
    (left / "handson-mechinterp-9.9.9").mkdir(parents=True)
    (left / ".made-by-the-setup-cell").touch()
    mine = notebook_dir / ".extracting-handson-mechinterp-mine"  # the same name pattern, without the marker
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    before = tree(tmp_path)
    course = Path(fetch(str(archive), digest)["course"])
    after = tree(tmp_path)
    assert not left.exists()
    assert {k: v for k, v in before.items() if not k.startswith(f"content/{left.name}")}.items() <= after.items()
    assert sorted(p.name for p in notebook_dir.iterdir()) == [mine.name, "handson-mechinterp-9.9.9", "my_notes.ipynb"]
    assert (course / ".extracted").is_file() and (course / "utils" / "__init__.py").is_file()


def test_a_good_bundle_beside_the_learners_files_extracts_without_touching_them(
    tmp_path, notebook_dir, colab, learners_files
):
    archive, digest = small_bundle(tmp_path / "drive")
    before = tree(tmp_path)
    fetch(str(archive), digest)
    after = tree(tmp_path)
    assert before.items() <= after.items()
    assert sorted(p.name for p in notebook_dir.iterdir()) == ["handson-mechinterp-9.9.9", "my_notes.ipynb"]


# Lesson 00 on a simulated Colab runtime


def simulated_colab_runtime(make_venv, tmp_path: Path, torch_version: str) -> Path:
    """A fresh virtual environment standing in for a Colab runtime; returns its python.

    It sees this environment's installed packages through a folder of links, except that the
    course's own editable install is left out and torch's metadata is a copy that says
    ``torch_version`` (the torch code is the real one); a fake ``google.colab`` is imported at
    start, as Colab's kernels do.
    """

    def place(entry: Path, preinstalled: Path) -> None:
        if "handson_mechinterp" in entry.name:
            return
        if entry.name.startswith("torch-") and entry.name.endswith(".dist-info"):
            copy = preinstalled / f"torch-{torch_version}.dist-info"
            shutil.copytree(entry, copy)
            metadata = (copy / "METADATA").read_text().splitlines(keepends=True)
            (copy / "METADATA").write_text(
                "".join(f"Version: {torch_version}\n" if line.startswith("Version:") else line for line in metadata)
            )
        else:
            (preinstalled / entry.name).symlink_to(entry)

    venv, site = make_venv("runtime", place)
    colab = tmp_path / "colab" / "google" / "colab"
    colab.mkdir(parents=True)
    (colab / "__init__.py").write_text('"""A stand-in for Colab\'s google.colab: the setup cell is given a path."""\n')
    (colab / "files.py").write_text("def upload():\n    raise RuntimeError('the simulation gives a path')\n")
    (colab / "drive.py").write_text("def mount(path):\n    raise RuntimeError('the simulation gives a path')\n")
    (colab / "output.py").write_text(  # records that the setup cell asked for Colab's widget manager
        "import os\n\n\ndef enable_custom_widget_manager():\n"
        "    open(os.environ['COLAB_WIDGET_LOG'], 'a').write('enabled\\n')\n"
    )
    # After this_environment.pth (the files are read in name order), so the packages are there first.
    (site / "zz_colab_runtime.pth").write_text(f"{colab.parent.parent}\nimport google.colab\n")
    return venv / "bin" / "python"


def lesson_00_with_setup_cell(setup_cell: str) -> nbformat.NotebookNode:
    """Lesson 00 with ``setup_cell`` first, then the cell run again and a report of what happened. Without
    its SmolLM2 section: what the setup cell does for that model on Colab (fetch its wheel) has its own test."""
    nb = nbs.without_real_model(nbformat.read(SOLUTIONS / "00_orientation.ipynb", as_version=4))
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[0].source = setup_cell
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import pathlib\n(pathlib.Path(sys.path[0]) / 'marker').write_text('left by the first run')"
        )
    )
    nb.cells.append(nbformat.v4.new_code_cell(setup_cell))
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import importlib.metadata, json, os, utils\n"
            "print(json.dumps({'cwd': os.getcwd(), 'utils': utils.__file__, 'sys_path': sys.path,\n"
            "                  'torch': importlib.metadata.version('torch'),\n"
            "                  'marker': (pathlib.Path(sys.path[0]) / 'marker').exists()}))"
        )
    )
    for cell in nb.cells:
        cell.outputs, cell.execution_count = [], None
    return nb


def text_of(cell: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


@pytest.mark.slow
def test_lesson_00_runs_on_a_simulated_colab_runtime_from_the_bundle(
    built, tmp_path, monkeypatch, venv_seeing_this_environment
):
    """Simulated: a Colab runtime whose preinstalled torch is another build in range (its
    metadata says 2.9.1+cu126; the code is this environment's torch), which has every other
    package the course needs preinstalled at the tested version, does not have the course,
    and has ``google.colab`` imported; a kernel started from that interpreter in an empty
    working directory, offline (HF_HUB_OFFLINE=1; PIP_NO_INDEX=1, so a pip call could not
    download either). The setup cell, with COURSE_SOURCE set to the bundle's path and
    COURSE_SHA256 to its checksum, runs first, then lesson 00's other code cells, then the
    setup cell again.

    Not simulated: Colab's own builds of the packages, a GPU, the upload dialog and Drive
    (their fakes raise if called), downloading from a URL, and a pip install: nothing differs
    from the tested set here, so none is needed (the unit tests cover that call)."""
    archive, digest, _ = built
    python = simulated_colab_runtime(venv_seeing_this_environment, tmp_path, "2.9.1+cu126")
    workdir = tmp_path / "content"
    workdir.mkdir()
    kernels = tmp_path / "jupyter" / "kernels" / "simulated-colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "simulated Colab",
                "language": "python",
                "env": {
                    "HF_HUB_OFFLINE": "1",
                    "PIP_NO_INDEX": "1",
                    "TOKENIZERS_PARALLELISM": "false",
                    "COLAB_WIDGET_LOG": str(tmp_path / "widget-manager.log"),
                },
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    setup_cell = bundler.stamp(ns.SETUP_CELL, str(archive), digest)
    for attempt in (1, 2):  # as the course's executor does: a kernel that stalls (a lost message) runs once more
        nb = lesson_00_with_setup_cell(setup_cell)
        client = CourseNotebookClient(
            nb, timeout=240, kernel_name="simulated-colab", resources={"metadata": {"path": str(workdir)}}
        )
        client.reset_execution_trackers()
        try:
            # the course's stall watch: a kernel idle for a minute mid-cell is stopped at once, not at the timeout
            with client.setup_kernel(), nbs._stall_watch(client):
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
            break
        except (CellTimeoutError, DeadKernelError):
            if attempt == 2:
                raise
            shutil.rmtree(workdir)  # start again from nothing: no extraction, no widget-manager log
            workdir.mkdir()
            (tmp_path / "widget-manager.log").unlink(missing_ok=True)

    course = workdir / NAME
    assert [p.name for p in workdir.iterdir()] == [NAME], "extracted once, next to the notebook, nothing else"
    first, again, report = text_of(nb.cells[0]), text_of(nb.cells[-2]), json.loads(text_of(nb.cells[-1]))
    assert "installing" not in first and f"course files in {course}" in first
    assert first.startswith("Course ready: torch ")
    assert report["marker"], "the second run reused the extraction"
    assert report["cwd"] == str(workdir)
    assert report["utils"] == str(course / "utils" / "__init__.py")
    assert report["sys_path"].count(str(course)) == 1
    assert report["torch"] == "2.9.1+cu126"
    assert f"course files in {course}" in again
    assert (tmp_path / "widget-manager.log").read_text() == "enabled\n" * 2, "Colab's widget manager, once per run"
    preinstalled_torch = tmp_path / "runtime-packages" / "torch-2.9.1+cu126.dist-info" / "METADATA"
    assert "Version: 2.9.1+cu126\n" in preinstalled_torch.read_text(), "torch was not reinstalled"
    runtime_site = python.parent.parent / "lib"
    assert not list(runtime_site.glob("python*/site-packages/torch*")), "nothing was installed into the runtime"
