"""The one-line switch off the zoo, representation lessons (04–07 and 10): as ``test_off_the_zoo_circuits.py``
does for 00–03, on GPT-2 and on the Llama that carries SmolLM2's tokenizer. These lessons read and write the
residual stream through the same hook names whatever the architecture; Gemma-2's soft-capping and scaled
embeddings and Qwen2's grouped key/value heads are exercised by the circuits lessons, which touch attention,
norms and logits directly, so the representation lessons skip those two for time. The capstone needs a model
trained on countdown traces, and lesson 09 one trained on belief stories: each says so in one sentence."""

import pytest

from utils.course import notebooks as nbs

# Lesson 10 trains its own toy models; MODEL gives only its last section a tokenizer and a width, which the Llama's
# run (a real tokenizer that is not the zoo's) exercises: a GPT-2 run would repeat a minute of toy models for nothing.
CASES = [(p, a) for p in sorted(nbs.SOLUTIONS.glob("0[4-7]_*.ipynb")) for a in ("gpt2", "llama")]
CASES += [(p, "llama") for p in sorted(nbs.SOLUTIONS.glob("10_*.ipynb"))]


@pytest.mark.parametrize("path, architecture", CASES, ids=[f"{p.name[:2]}-{a}" for p, a in CASES])
def test_each_representations_lesson_runs_on_a_random_gpt2_and_a_random_llama_with_a_real_tokenizer(
    path, architecture, random_model_folders, runs_off_the_zoo, tmp_path
):
    random_model_folder = random_model_folders[architecture]
    if path.name.startswith("07") and random_model_folder.name == "llama":
        # lesson 07 carries vectors from a SOURCE model to MODEL token by token: with SmolLM2's tokenizer
        # on the Llama and the course's on the zoo's SOURCE, it says so in one sentence instead
        import re

        import nbformat

        nb = nbs.without_real_model(nbformat.read(path, as_version=4))
        cell = [c for c in nb.cells if c.cell_type == "code"][1]
        cell.source = re.sub(r'^MODEL = "[^"]+"', f'MODEL = "{random_model_folder}"', cell.source, count=1, flags=re.M)
        nbformat.write(nb, tmp_path / path.name)
        error = nbs.execute(tmp_path / path.name)["error"]
        sentence = (  # the executor keeps an error's first 300 characters: a long folder name cuts the end
            f"ValueError: this lesson compares storyworld-4l and {random_model_folder} token by token, so they must "
            f"share a tokenizer; pick a SOURCE from {random_model_folder}'s family (for MODEL = 'gpt2-small', "
            "SOURCE = 'gpt2-medium')"
        )
        assert error == sentence[:300], error
        return
    runs_off_the_zoo(path, random_model_folder)


@pytest.mark.parametrize(
    "lesson, trained_on, models",
    [
        ("08", "countdown traces", "countdown-llama, countdown-llama-3l"),
        ("09", "belief stories", "beliefs-llama, beliefs-llama-rerun"),
    ],
    ids=["capstone", "beliefs"],
)
def test_a_lesson_for_one_corpus_on_a_model_not_trained_on_it_says_so_in_one_sentence(
    lesson, trained_on, models, random_model_folder, tmp_path
):
    import re

    import nbformat

    [path] = nbs.SOLUTIONS.glob(f"{lesson}_*.ipynb")
    nb = nbs.without_real_model(nbformat.read(path, as_version=4))
    cell = [c for c in nb.cells if c.cell_type == "code"][1]
    cell.source = re.sub(r'^MODEL = "[^"]+"', f'MODEL = "{random_model_folder}"', cell.source, count=1, flags=re.M)
    nbformat.write(nb, tmp_path / path.name)
    error = nbs.execute(tmp_path / path.name)["error"]
    assert error == (
        f"ValueError: this lesson takes apart a model trained on {trained_on}, and {random_model_folder} "
        f"is not one: set MODEL to one of {models}"
    )
