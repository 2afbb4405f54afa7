"""The one-line switch off the zoo, circuits lessons (00–03): each runs end to end on a random-weight
GPT-2, Llama, Gemma-2 and Qwen2 saved in the hub's format (``random_model_folder``), loaded by
changing its MODEL line to the folder. Its claims about the zoo model are reported, one line each,
not asserted. The representation lessons and the capstone: ``test_off_the_zoo_representations.py``."""

import pytest

from utils.course import notebooks as nbs


@pytest.mark.parametrize("path", sorted(nbs.SOLUTIONS.glob("0[0-3]_*.ipynb")), ids=lambda p: p.name[:2])
def test_each_circuits_lesson_runs_on_a_random_model_of_each_architecture_loaded_from_a_folder(
    path, random_model_folder, runs_off_the_zoo
):
    runs_off_the_zoo(path, random_model_folder)
