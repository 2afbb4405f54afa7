"""The appendix's NDIF cell: without a key it sends nothing; with a key but no hub it says so in one
line, at once, before anything is sent to NDIF."""

import time

import nbformat
import pytest

from utils.course import notebooks as nbs
from utils.paths import SOLUTIONS

APPENDIX = SOLUTIONS / "A1_nnsight_and_ndif.ipynb"


def ndif_cell() -> str:
    cells = nbs.read_notebook(APPENDIX).cells
    (source,) = [c.source for c in cells if c.cell_type == "code" and "NDIF_API_KEY" in c.source]
    return source


def run_ndif_cell(tmp_path) -> tuple[dict, float]:
    """The NDIF cell in a fresh kernel (with the environment the test set): its error output, and the run's seconds."""
    path = tmp_path / "A1_ndif.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os"), nbformat.v4.new_code_cell(ndif_cell())]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    t = time.monotonic()
    nbs.execute(path, keep=tmp_path / "runs")
    seconds = time.monotonic() - t
    outputs = nbformat.read(tmp_path / "runs" / path.name, 4).cells[1].outputs
    errors = [o for o in outputs if o.output_type == "error"]
    return (errors[0] if errors else {}), seconds


@pytest.mark.parametrize("hub", ["offline", "unreachable"])
def test_with_a_key_but_no_hub_the_ndif_cell_stops_at_once_in_one_line_having_sent_nothing(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "a-learners-key")
    monkeypatch.setenv("NNSIGHT_CONFIG", "/dev/null")
    # the course's own runs start kernels without the key; a learner's Jupyter passes it on, as here
    monkeypatch.setattr(nbs, "REMOTE_ENV", ())
    if hub == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        why = "(HF_HUB_OFFLINE=1 is set: unset it to go online)"
    else:  # a hub that refuses connections, as a machine without a network fails to reach it
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        why = "(the hub at http://127.0.0.1:9 cannot be reached: Connection refused)"
    error, seconds = run_ndif_cell(tmp_path)
    assert len(error.get("traceback", [])) == 1, error
    line = nbs.ANSI.sub("", error["traceback"][0])
    assert line == (
        "NDIF not tried: the config of meta-llama/Llama-3.1-70B could not be fetched from the Hugging Face hub "
        f"{why}, so nothing was sent to NDIF"
    )
    assert seconds < 60, "the hub's client retries for about 25 s before it gives up; the cell does not wait for it"
