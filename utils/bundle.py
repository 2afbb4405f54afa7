"""``python -m utils.bundle``: the course as one self-contained archive, for Colab workshops.

``dist/handson-mechinterp-<version>.tar.gz`` holds the files git tracks in ``CONTENTS``
under one top folder named like the archive. It is reproducible: entries are sorted, owners
and mtimes fixed and the gzip header carries no time, so the same tree gives the same
sha256, which is printed and written next to the archive (``<archive>.sha256``, in the
format ``sha256sum -c`` reads). See docs/teaching-on-colab.md.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DIST, help="folder for the archive (default: dist/)")
    args = parser.parse_args(argv)
    try:
        args.out.resolve().mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"bundle: cannot write the archive into {args.out}: {error.strerror or error}; pass --out a folder you "
              "can write to", file=sys.stderr)  # fmt: skip
        return 1
    try:
        archive = write_bundle(args.out.resolve())
    except BundleError as error:
        print(f"bundle: {error}", file=sys.stderr)
        return 1
    size = archive.stat().st_size / 1e6
    print(f"bundle: wrote {shown(archive)} ({size:.1f} MB)")
    print(f"sha256 {sha256(archive)}  (also in {shown(archive)}.sha256)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
