"""``python -m utils.course.bundle``: the course as one self-contained archive, for Colab workshops.

``dist/handson-mechinterp-<version>.tar.gz`` holds the files git tracks in ``CONTENTS``
under one top folder named like the archive. It is reproducible: entries are sorted, owners
and mtimes fixed and the gzip header carries no time, so the same tree gives the same
sha256, which is printed and written next to the archive (``<archive>.sha256``, in the
format ``sha256sum -c`` reads). See docs/teaching-on-colab.md.

With ``--url`` (``make bundle URL=...``) it also writes the workshop's notebooks,
``dist/handson-mechinterp-<version>-workshop/``: every lesson's exercise notebook without its
solution cells, with the bundle's address and checksum already typed into its first cell, so that
learners open a notebook and press *Run*.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from utils.paths import DIST, ROOT, shown

CONTENTS = ("utils", "notebooks", "solutions", "data", "docs", "constraints.txt", "pyproject.toml", "README.md")


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


def write_bundle(out_dir: Path = DIST, root: Path = ROOT) -> Path:
    """Write the archive and its ``.sha256`` into ``out_dir``; returns the archive's path."""
    name = bundle_name(root)
    files = bundled_files(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{name}.tar.gz"
    partial = archive.with_name(archive.name + ".part")
    with (
        partial.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in files:
            path = root / rel
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size = path.stat().st_size
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as f:
                tar.addfile(info, f)
    partial.replace(archive)
    digest = sha256(archive)
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    return archive


def sha256(path: Path) -> str:
    """The file's sha256, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_source(source: str, archive_name: str) -> None:
    """Refuse an address the setup cell could not fetch this bundle from: a URL or a Drive path must
    end with the archive's file name (the cell saves and finds the file under that name)."""
    kinds = ("https://", "http://", "file://", "/content/drive/")
    if not source.startswith(kinds):
        raise BundleError(
            f"--url {source!r} is neither a web address (https://...) nor a path on Google Drive "
            "(/content/drive/MyDrive/...): give the address learners will fetch the bundle from"
        )
    if source.split("?")[0].rsplit("/", 1)[-1] != archive_name:
        raise BundleError(
            f"--url {source!r} must end with the bundle's file name, {archive_name}: the first cell "
            "saves the download under that name"
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


def write_workshop(archive: Path, source: str, digest: str, out: Path | None = None) -> Path:
    """The workshop's notebooks for ``archive`` (whose sha256 is ``digest``) fetched from ``source``:
    every exercise notebook without its solutions, its first cell stamped with ``source`` and
    ``digest``, in ``<archive's folder>/<name>-workshop/`` (or ``out``). Returns the folder."""
    from utils.course.notebook_setup import SETUP_CELL
    from utils.course.notebooks import build_without_solutions

    name = archive.name.removesuffix(".tar.gz")
    check_source(source, archive.name)
    out = out or archive.parent / f"{name}-workshop"
    if out.exists():
        for old in out.glob("*.ipynb"):
            old.unlink()

    def stamped(notebook: str, cell: str) -> str:
        if cell != SETUP_CELL:
            raise BundleError(f"{notebook}'s first code cell is not the course's setup cell: rebuild the notebooks")
        return stamp(cell, source, digest)

    build_without_solutions(out, first_cell=stamped)
    lessons = sorted(p.name for p in out.glob("*.ipynb"))
    (out / "README.md").write_text(
        "\n".join(
            [
                f"# {name}: the workshop's notebooks",
                "",
                "Open a notebook in Colab (upload it, or open it from Drive) and run its first cell: it fetches",
                f"the course from {source}, checks its sha256 ({digest}) and installs what Colab lacks.",
                "These notebooks hold every exercise, check and hint; the solutions are handed out separately.",
                "",
                *[f"- {lesson}" for lesson in lessons],
                "",
            ]
        ),
        encoding="utf-8",
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.course.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DIST, help="folder for the archive (default: dist/)")
    parser.add_argument(
        "--url",
        help="where learners will fetch the archive (a URL or a /content/drive/ path ending with its file name): "
        "also write the workshop's notebooks, without solutions, this address and the checksum in their first cell",
    )
    args = parser.parse_args(argv)
    try:
        args.out.resolve().mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(
            f"bundle: cannot write the archive into {args.out}: {error.strerror or error}; pass --out a folder you "
            "can write to",
            file=sys.stderr,
        )
        return 1
    try:
        if args.url:
            check_source(args.url, f"{bundle_name()}.tar.gz")  # before the archive is written
        archive = write_bundle(args.out.resolve())
        digest = sha256(archive)
        workshop = write_workshop(archive, args.url, digest) if args.url else None
    except BundleError as error:
        print(f"bundle: {error}", file=sys.stderr)
        return 1
    size = archive.stat().st_size / 1e6
    print(f"bundle: wrote {shown(archive)} ({size:.1f} MB)")
    print(f"sha256 {digest}  (also in {shown(archive)}.sha256)")
    if workshop:
        count = len(list(workshop.glob("*.ipynb")))
        print(f"workshop: wrote {count} notebooks without solutions into {shown(workshop)}/, each fetching {args.url}")
        print("  put the archive at that address, then share that folder with learners (e.g. upload it to Drive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
