"""Seeds: no training run ever sees the documents that held-out measurements draw."""

import nbformat
import pytest

from utils import seeds
from utils.course import notebooks as nbs
from utils.course.notebook_setup import SETUP_CELL
from utils.model_zoo.registry import SPECS

# the tokenizer's training seed; the sweep's settings
NOT_SEEDS = {"TOKENIZER", "SLOTS", "EXTRA_START", "EXTRA_SLOTS", "CI_FRESH_SAMPLE"}
MEASUREMENT_SEEDS = {
    name: value
    for name, value in vars(seeds).items()
    if name.isupper() and isinstance(value, int) and name not in NOT_SEEDS
}


def test_no_training_run_or_the_tokenizer_uses_a_held_out_seed():
    training = {s.data_seed for s in SPECS.values()} | {seeds.TOKENIZER}
    assert not any(seeds.is_held_out(seed) for seed in training)


def test_every_measurement_seed_is_held_out_and_distinct():
    assert MEASUREMENT_SEEDS and all(seeds.is_held_out(v) for v in MEASUREMENT_SEEDS.values()), MEASUREMENT_SEEDS
    assert len(set(MEASUREMENT_SEEDS.values())) == len(MEASUREMENT_SEEDS)


def test_no_measurement_seed_lies_in_the_range_kept_for_fresh_samples():
    assert not any(v in seeds.FRESH_SAMPLES for v in MEASUREMENT_SEEDS.values())


@pytest.mark.parametrize("value", ["0", "-1", "13", "99"])
def test_a_fresh_sample_out_of_range_names_the_variable_its_value_the_range_and_how_to_unset_it(value, monkeypatch):
    monkeypatch.setenv(seeds.FRESH_SAMPLE_ENV, value)
    with pytest.raises(seeds.FreshSampleError) as e:
        seeds.fresh_sample()
    message = str(e.value)
    assert f"COURSE_FRESH_SAMPLE={value}" in message and "1 to 12" in message
    assert "unset COURSE_FRESH_SAMPLE" in message and "\n" not in message
    assert e.value._render_traceback_() == [f"\x1b[1;31m{message}\x1b[0m"], "a notebook shows one red line"


def test_a_bad_fresh_sample_stops_the_notebooks_setup_cell_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "00_x.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP_CELL), nbformat.v4.new_code_cell("1 + 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    monkeypatch.setenv(seeds.FRESH_SAMPLE_ENV, "0")  # set before the kernel starts, as a learner sets it
    result = nbs.execute(path, keep=tmp_path / "runs")
    assert "COURSE_FRESH_SAMPLE=0" in result["error"]
    (error,) = [o for o in nbformat.read(tmp_path / "runs" / path.name, 4).cells[0].outputs if o.output_type == "error"]
    assert len(error.traceback) == 1 and "unset COURSE_FRESH_SAMPLE" in error.traceback[0], error.traceback


def test_every_fresh_seed_of_every_sample_is_held_out_distinct_and_in_the_fresh_range():
    drawn = [v for k in range(1, seeds.samples_available() + 1) for v in seeds.fresh_sample_seeds(k).values()]
    assert len(set(drawn)) == len(drawn)
    assert all(seeds.is_held_out(v) and v in seeds.FRESH_SAMPLES for v in drawn)


def test_lesson_seeds_past_the_first_slots_leave_the_earlier_lessons_fresh_seeds_where_they_were():
    names = seeds.lesson_seed_names()
    for k in (1, 10):
        fresh = seeds.fresh_sample_seeds(k)
        start = seeds.FRESH_SAMPLES.start + seeds.SLOTS * (k - 1)
        assert [fresh[n] for n in names[: seeds.SLOTS]] == list(range(start, start + seeds.SLOTS))
