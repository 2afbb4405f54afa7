"""Steering prompts, and the exact reading of what a generated continuation expresses."""

import math

import pytest

from utils.corpora import storyworld
from utils.interventions import steering


def test_a_sentence_is_read_as_the_emotion_whose_words_it_uses():
    for k, (verb, angle) in enumerate(storyworld.BEHAVIOURS):
        manner = storyworld.MANNERS[k][0]
        ending = max(storyworld.ENDINGS, key=lambda e: math.cos(math.radians(angle - e[1])))[0]  # the likeliest
        loglik = steering.sentence_loglik("Ann", f" Ann {verb} {manner}{ending}")
        best = max(range(12), key=lambda e: loglik[e])
        assert best == k, (verb, storyworld.EMOTIONS[best])


def test_a_sentence_naming_a_feeling_is_read_as_that_feeling():
    loglik = steering.sentence_loglik("Bob", " Bob felt angry.")
    assert max(range(12), key=lambda e: loglik[e]) == storyworld.EMOTIONS.index("angry")
    # drift moves one step at most: the far side of the circle cannot write it
    assert loglik[storyworld.EMOTIONS.index("calm")] == -math.inf


def test_a_sentence_that_is_not_storyworld_fits_no_emotion():
    assert set(steering.sentence_loglik("Ann", " Ann smiled clock.")) == {-math.inf}


def test_sentences_split_after_their_ending_and_keep_their_leading_space():
    text = 'Ann was in the park. Ann felt calm. Ann said, "Yay!" Ann cried tearfully... Ann yawned'
    spans = steering.split_sentences(text, text.index(" Ann felt"))
    assert [text[a:b] for a, b in spans] == [" Ann felt calm.", ' Ann said, "Yay!"', " Ann cried tearfully..."]


@pytest.mark.parametrize("named", [True, False])
def test_prompts_are_cut_from_real_stories_at_the_start_of_a_sentence_about_the_character(named):
    prompts = steering.story_prompts(20, seed=0, named=named)
    assert len(prompts) == 20 and len({p.text for p in prompts}) > 10
    for p in prompts:
        assert p.text[p.start :].startswith(" " + p.name)
        assert p.text.endswith(" " + p.name if named else " felt")
        assert (p.emotion is not None) == named


def test_a_continuation_is_valid_only_when_the_whole_story_parses():
    prompt = steering.story_prompts(1, seed=0)[0]
    good = steering.read_continuation(prompt, " smiled warmly. " + prompt.name + " hugged", ended=False)
    assert good.valid and len(good.loglik) == 1 and good.first == 0
    broken = steering.read_continuation(prompt, " smiled clock. " + prompt.name, ended=False)
    assert not broken.valid and broken.first is None
    unfinished = steering.read_continuation(prompt, " smiled warmly", ended=False)
    assert not unfinished.valid and unfinished.loglik == []


def test_a_continuation_that_ends_the_story_must_end_it_where_a_story_can_end():
    prompt = steering.story_prompts(1, seed=0)[0]
    assert steering.read_continuation(prompt, " smiled warmly.", ended=True).valid
    assert not steering.read_continuation(prompt, " smiled warmly", ended=True).valid


def test_generation_without_hooks_continues_the_story_and_a_hook_that_breaks_it_is_seen():
    import torch

    from utils import load_model

    model = load_model("storyworld-4l", device="cpu")
    prompts = steering.story_prompts(6, seed=1)
    plain = steering.generate(model, prompts, n_new=8)
    assert all(r.valid for r in plain)
    assert sum(r.first == p.emotion for r, p in zip(plain, prompts)) >= 5

    def noise(act, hook):
        return act + 200 * torch.randn_like(act)

    torch.manual_seed(0)
    broken = steering.generate(model, prompts, n_new=8, hooks=[("blocks.1.hook_resid_post", noise)])
    assert sum(r.valid for r in broken) <= 2


def test_generation_unembeds_the_last_position_alone_and_continues_as_the_full_logits_would():
    import torch

    from utils import load_model

    model = load_model("storyworld-llama", device="cpu")
    prompts = steering.story_prompts(8, seed=2)
    push = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3
    hooks = [steering.steering_hook("blocks.1.hook_resid_post", push, "prompt")]
    ids = steering.prompt_tokens(model, prompts)
    expected = []
    for i, r in enumerate(ids):  # one prompt at a time, every position unembedded, as the plain loop does
        x = torch.tensor([r])
        with torch.no_grad(), model.hooks(fwd_hooks=[hooks[0](len(r), [i])]):
            for _ in range(6):
                x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], 1)
        expected.append(x[0, len(r) :].tolist())
    got = steering.generate(model, prompts, n_new=6, hooks=hooks)
    tok = model.tokenizer
    for p, e, g in zip(prompts, expected, got):
        new = e[: e.index(tok.eos_token_id)] if tok.eos_token_id in e else e
        assert g == steering.read_continuation(p, tok.decode(new), tok.eos_token_id in e)
