"""Paths: one root, found from the package itself, whatever the working directory."""

import subprocess
import sys

from utils import paths


def test_the_root_is_the_repository_holding_the_package_and_the_data():
    assert (paths.ROOT / "pyproject.toml").is_file() and (paths.ROOT / "utils" / "paths.py").is_file()
    assert paths.MODELS.parent == paths.DATA and paths.TOKENIZER_DIR.parent == paths.DATA


def test_paths_do_not_depend_on_the_working_directory(tmp_path):
    code = "from utils import paths; print(paths.ROOT)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(paths.ROOT)},
        check=True,
    ).stdout.strip()
    assert out == str(paths.ROOT)


def test_messages_show_paths_inside_the_repository_relative_to_it(tmp_path):
    assert paths.shown(paths.MODELS / "storyworld-4l" / "card.json") == "data/models/storyworld-4l/card.json"
    assert paths.shown(tmp_path / "x") == str(tmp_path / "x")
