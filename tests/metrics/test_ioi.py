"""IOI prompts come from the transfer annotations: the answer follows the prompt."""

from utils import seeds
from utils.corpora import storyworld
from utils.corpora.tokenizer import load_tokenizer
from utils.metrics import ioi


def test_each_prompt_stops_just_before_the_answer_which_differs_from_the_distractor():
    docs = storyworld.sample_docs(seeds.TEST_SAMPLE, 60, "transfer")
    prompts, answers, distractors = ioi.ioi_prompts(docs)
    tok = load_tokenizer()
    assert len(prompts) == len(docs) == len(answers) == len(distractors)
    for d, p, a, b in zip(docs, prompts, answers.tolist(), distractors.tolist()):
        assert tok.decode(p[1:]) == d.text[: d.annotations["prompt_end"]]
        assert d.text[d.annotations["prompt_end"] :].startswith(tok.decode([a]))
        assert a != b
