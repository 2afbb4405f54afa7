"""``python -m utils.course.bundle``: the course as one self-contained archive, for Colab workshops.

``dist/handson-mechinterp-<version>.tar.gz`` holds the files git tracks in ``CONTENTS``
under one top folder named like the archive. It is reproducible: entries are sorted, owners
and mtimes fixed and the gzip header carries no time, so the same tree gives the same
sha256, which is printed and written next to the archive (``<archive>.sha256``, in the
format ``sha256sum -c`` reads). See docs/teaching-on-colab.md.

With ``--url`` (``make bundle URL=...``) it also writes what a workshop hands out:

* ``dist/handson-mechinterp-<version>-workshop.tar.gz`` (and its ``.sha256``): the same course
  without its solutions (``WITHHELD``: ``solutions/`` and the facilitator guide's model answers;
  ``notebooks/`` built without solution cells), under the same top folder
  ``handson-mechinterp-<version>/``, which is the name the setup cell extracts. Nothing a lesson runs
  reads ``solutions/``. The URL is where learners will fetch this archive, so it must end with its name;
  the complete archive stays for self-learners.
* ``dist/handson-mechinterp-<version>-workshop/``: every lesson's exercise notebook without its
  solution cells, with the workshop archive's address and checksum already typed into its first cell,
  so that learners open a notebook and press *Run*.

Every file is written to a temporary name and renamed when whole, and the workshop folder is written
whole or not at all: a full disk, an unwritable folder or Ctrl-C leaves nothing half-written and ends
in one sentence.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from utils.paths import DIST, ROOT, shown

CONTENTS = ("utils", "notebooks", "solutions", "data", "docs", "constraints.txt", "pyproject.toml", "README.md")
# What the workshop's archive leaves out: the solutions, and the model answers of the facilitator guide.
WITHHELD = ("solutions/", "docs/facilitator/")
WORKSHOP_SUFFIX = "-workshop"


class BundleError(RuntimeError):
    """The working tree cannot be bundled as it is."""


def _git_files(root: Path, *options: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", *options, "--", *CONTENTS], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return sorted(f for f in out.split("\0") if f)


def bundled_files(root: Path = ROOT) -> list[str]:
    """The tracked files of ``CONTENTS``, sorted; refuses while one of them has an untracked,
    unignored neighbour (a new module not yet added would be missing from the bundle).

    Untracked files in ``notebooks/`` do not count: they are a learner's own copies, which
    never belong in a bundle and must not stop one.
    """
    untracked = [f for f in _git_files(root, "--others", "--exclude-standard") if not f.startswith("notebooks/")]
    if untracked:
        raise BundleError(
            "git does not track these files, so the bundle would leave them out: "
            f"{', '.join(untracked)}. Add them to git (or ignore them) and run again."
        )
    return [f for f in _git_files(root) if (root / f).is_file()]


def bundle_name(root: Path = ROOT) -> str:
    """``handson-mechinterp-<version>``, the version from pyproject.toml."""
    project = (root / "pyproject.toml").read_text().split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    fields = dict(re.findall(r'(?m)^(name|version) = "([^"]+)"$', project))
    return f"{fields['name']}-{fields['version']}"


def workshop_archive_name(root: Path = ROOT) -> str:
    """``handson-mechinterp-<version>-workshop.tar.gz``, the archive the workshop's notebooks fetch."""
    return f"{bundle_name(root)}{WORKSHOP_SUFFIX}.tar.gz"


def archive_bytes(top: str, entries: list[tuple[str, Path | bytes]]) -> bytes:
    """A reproducible .tar.gz of ``entries`` ((path inside ``top``/, a file or its bytes), in the order
    given): no times, owners or names of owners; a file keeps only whether it is executable."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel, content in entries:
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if isinstance(content, Path):
                status = content.stat()
                info.size = status.st_size
                info.mode = 0o755 if status.st_mode & 0o111 else 0o644
                with content.open("rb") as f:
                    tar.addfile(info, f)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _write_archive(out_dir: Path, file_name: str, data: bytes) -> Path:
    """Write an archive and its ``.sha256`` into ``out_dir``, each whole or not at all; returns its path.
    The old checksum goes first, so that an interrupted run never leaves one that names other bytes."""
    from utils.course.notebooks import write_atomically

    archive = out_dir / file_name
    checksum = archive.with_name(archive.name + ".sha256")
    checksum.unlink(missing_ok=True)
    write_atomically(archive, data, "the archive")
    write_atomically(checksum, f"{hashlib.sha256(data).hexdigest()}  {archive.name}\n", "its checksum")
    return archive


def write_bundle(out_dir: Path = DIST, root: Path = ROOT) -> Path:
    """Write the archive and its ``.sha256`` into ``out_dir``; returns the archive's path."""
    name = bundle_name(root)
    files = bundled_files(root)
    data = archive_bytes(name, [(rel, root / rel) for rel in files])
    out_dir.mkdir(parents=True, exist_ok=True)
    return _write_archive(out_dir, f"{name}.tar.gz", data)


def workshop_entries(root: Path = ROOT) -> list[tuple[str, Path | bytes]]:
    """What the workshop archive holds: the bundle's files less ``WITHHELD``, with every lesson's
    exercise notebook built without its solution cells."""
    from utils.course.notebooks import workshop_notebooks

    exercises = {
        f"notebooks/{n}": text.encode("utf-8") for n, text in workshop_notebooks(None, root / "solutions").items()
    }
    files = [rel for rel in bundled_files(root) if not rel.startswith(WITHHELD)]
    return [(rel, exercises.get(rel, root / rel)) for rel in sorted(set(files) | set(exercises))]


def write_workshop_bundle(out_dir: Path = DIST, root: Path = ROOT) -> Path:
    """Write the workshop archive (the course without its solutions) and its ``.sha256`` into ``out_dir``;
    returns its path. Its top folder is the complete archive's, ``handson-mechinterp-<version>/``."""
    data = archive_bytes(bundle_name(root), workshop_entries(root))
    out_dir.mkdir(parents=True, exist_ok=True)
    return _write_archive(out_dir, workshop_archive_name(root), data)


def sha256(path: Path) -> str:
    """The file's sha256, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_source(source: str, archive_name: str) -> None:
    """Refuse an address the setup cell could not fetch this archive from: a URL (its scheme in any case)
    or a Drive path must end with the archive's file name (the cell saves and finds the file under that
    name)."""
    if not (source.lower().startswith(("https://", "http://", "file://")) or source.startswith("/content/drive/")):
        raise BundleError(
            f"--url {source!r} is neither a web address (https://...) nor a path on Google Drive "
            "(/content/drive/MyDrive/...): give the address learners will fetch the bundle from"
        )
    if source.split("?")[0].rsplit("/", 1)[-1] == archive_name:
        return
    if archive_name.endswith(f"{WORKSHOP_SUFFIX}.tar.gz"):
        complete = archive_name.replace(f"{WORKSHOP_SUFFIX}.tar.gz", ".tar.gz")
        raise BundleError(
            f"--url {source!r} must end with the workshop archive's file name, {archive_name}: the workshop's "
            f"notebooks fetch the course without its solutions, and {complete} is the complete one, for self-learners"
        )
    raise BundleError(
        f"--url {source!r} must end with the archive's file name, {archive_name}: the first cell saves the "
        "download under that name"
    )


def stamp(setup_cell: str, source: str, sha256: str) -> str:
    """The setup cell with ``COURSE_SOURCE`` and ``COURSE_SHA256`` filled in."""
    for name, value in (("COURSE_SOURCE", source), ("COURSE_SHA256", sha256)):
        blank = f'{name} = ""'
        if setup_cell.count(blank) != 1:
            raise BundleError(
                f"the setup cell should hold the line {blank} once; it holds it {setup_cell.count(blank)} times"
            )
        setup_cell = setup_cell.replace(blank, f"{name} = {value!r}", 1)
    return setup_cell


def check_site(site: str) -> None:
    """Refuse a site address the learners' browsers could not open."""
    if not re.match(r"(?i)https?://[^/\s]+", site):
        raise BundleError(
            f"--site {site!r} is not a web address: give where the folder build/site/html (make site) is published, "
            "e.g. https://example.org/course/"
        )


def write_workshop(archive: Path, source: str, digest: str, out: Path | None = None, site: str | None = None) -> Path:
    """The workshop's notebooks for the workshop ``archive`` (whose sha256 is ``digest``) fetched from
    ``source``: every exercise notebook without its solutions, its first cell stamped with ``source`` and
    ``digest``, and a README, in ``<archive's folder>/<name>-workshop/`` (or ``out``), written whole or
    not at all. With ``site`` (where the course's site is published), every relative link in the notebooks (the
    glossary, the start page, the next lesson) points at its page there: on Colab a notebook has no folder around
    it. Returns the folder."""
    from utils.course.notebook_setup import SETUP_CELL
    from utils.course.notebooks import workshop_notebooks, write_folder
    from utils.course.site import published_links

    if not archive.name.endswith(f"{WORKSHOP_SUFFIX}.tar.gz"):
        raise BundleError(
            f"the workshop's notebooks fetch the workshop archive, the course without solutions "
            f"(…{WORKSHOP_SUFFIX}.tar.gz), not {archive.name}"
        )
    name = archive.name.removesuffix(".tar.gz")
    check_source(source, archive.name)
    if site:
        check_site(site)
    out = out or archive.parent / name

    def stamped(notebook: str, cell: str) -> str:
        if cell != SETUP_CELL:
            raise BundleError(f"{notebook}'s first code cell is not the course's setup cell: rebuild the notebooks")
        return stamp(cell, source, digest)

    def linked(notebook: str, text: str) -> str:
        return published_links(text, f"notebooks/{notebook}", site)

    files: dict[str, str | bytes] = dict(workshop_notebooks(stamped, markdown=linked if site else None))
    links = (
        f"Links in the notebooks (the glossary, the start page, the next lesson) open the course's site, {site}."
        if site
        else "Links in the notebooks to the glossary, the start page and the next lesson lead nowhere on Colab "
        "(they are relative to the course's folders); publish the site (make site) and pass its address to "
        "make bundle as SITE= to make them work."
    )
    files["README.md"] = "\n".join(
        [
            f"# {name.removesuffix(WORKSHOP_SUFFIX)}: the workshop's notebooks",
            "",
            "For each lesson, in this order:",
            "",
            "1. Open the notebook in Colab (from this shared folder, or upload it).",
            "2. **File → Save a copy in Drive, before typing anything.** The shared notebook is not yours: in a",
            "   folder you may only view, your answers are lost when the runtime ends; in one you may edit, everyone",
            '   in the room types into the same file. Work in the copy Colab opens ("Copy of ...").',
            "3. Run the first cell. Colab warns that the notebook was not authored by Google: choose *Run anyway*",
            "   (the cell is the course's setup; read it first if you like).",
            f"   It fetches the course without solutions from {source},",
            f"   checks its sha256 ({digest}) and installs what Colab lacks.",
            "",
            "These notebooks hold every exercise, check and hint; neither they nor that archive hold the solutions,",
            "which are handed out separately. " + links,
            "",
            *[f"- {lesson}" for lesson in sorted(files)],
            "",
        ]
    )
    write_folder(out, files, "the workshop's notebooks")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.course.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DIST, help="folder for the archive (default: dist/)")
    parser.add_argument(
        "--url",
        help="where learners will fetch the workshop archive (a URL or a /content/drive/ path ending with its file "
        f"name, {workshop_archive_name()}): also write that archive, the course without "
        "solutions, and the workshop's notebooks, this address and the checksum in their first cell",
    )
    parser.add_argument(
        "--site",
        help="where the course's site (make site: build/site/html) is published: the workshop's notebooks then link "
        "the glossary, the start page and the next lesson there (on Colab their relative links lead nowhere)",
    )
    args = parser.parse_args(argv)
    try:
        return _bundle(args.out, args.url, args.site)
    except KeyboardInterrupt:
        print(
            "bundle: interrupted: no file was left half-written, but the archives and the workshop's notebooks "
            "may not match yet; run it again before handing anything out",
            file=sys.stderr,
        )
        return 130


def _bundle(out: Path, url: str | None, site: str | None = None) -> int:
    from utils.course.notebooks import CannotWrite, NotebookError

    if out.exists() and not out.is_dir():
        print(
            f"bundle: --out {shown(out)} is a file, not a folder; pass --out a folder you can write to", file=sys.stderr
        )
        return 1
    try:
        out.resolve().mkdir(parents=True, exist_ok=True)
        probe = out.resolve() / f".write-test-{os.getpid()}"  # refused at once, not after building the archive
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as error:
        print(
            f"bundle: cannot write the archive into {shown(out)}: {error.strerror or error}; pass --out a folder you "
            "can write to",
            file=sys.stderr,
        )
        return 1
    try:
        if url:
            check_source(url, workshop_archive_name())  # before anything is written
        if site:
            if not url:
                raise BundleError("--site sets the links of the workshop's notebooks: give --url as well")
            check_site(site)
        archive = write_bundle(out.resolve())
        digest = sha256(archive)
        print(f"bundle: wrote {shown(archive)} ({archive.stat().st_size / 1e6:.1f} MB)")
        print(f"sha256 {digest}  (also in {shown(archive)}.sha256)")
        if not url:
            print(
                f"bundle: for a workshop, put the course without solutions where learners can fetch it, at an address "
                f"ending in {workshop_archive_name()}, and run: make bundle URL=<that address> "
                "(and SITE=<where make site's build/site/html is published>, for the notebooks' links)"
            )
            return 0
        ours = write_workshop_bundle(out.resolve())
        ours_digest = sha256(ours)
        print(f"workshop: wrote {shown(ours)} ({ours.stat().st_size / 1e6:.1f} MB), the course without solutions")
        print(f"sha256 {ours_digest}  (also in {shown(ours)}.sha256)")
        workshop = write_workshop(ours, url, ours_digest, site=site)
    except (BundleError, NotebookError) as error:
        print(f"bundle: {error}", file=sys.stderr)
        return 1
    except CannotWrite as error:
        print(f"bundle: {error.advice()}", file=sys.stderr)
        return 1
    count = len(list(workshop.glob("*.ipynb")))
    print(f"workshop: wrote {count} notebooks without solutions into {shown(workshop)}/, each fetching {url}")
    print(f"  put {ours.name} at that address, then share that folder with learners (e.g. upload it to Drive);")
    print("  its README tells them to save a copy in Drive before typing (File -> Save a copy in Drive)")
    if not site:
        print("  links to the glossary and the next lesson lead nowhere on Colab: publish make site, pass SITE=")
    return 0


if __name__ == "__main__":
    sys.exit(main())
