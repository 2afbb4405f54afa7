"""Every measurement that takes a model reads the text with that model's own tokenizer.

The zoo's models share the course's 985-token Storyworld tokenizer; SmolLM2-135M has its own
(49,152 tokens, ``<|endoftext|>`` id 0 as BOS and EOS) and cuts 7 of the 24 Storyworld names in
pieces. Each number here is computed again by hand with ``model.tokenizer`` and must agree. The
suite's small random-weight Llama, which carries SmolLM2's tokenizer files, checks the same on a
model the course knows nothing about (loaded from a folder, as a learner's own would be).
"""

from __future__ import annotations

import re

import pytest
import torch

from utils import load_model, seeds
from utils.cards.model_cards import _head_measurements
from utils.corpora import storyworld
from utils.corpora.ioi_pairs import patching_pairs
from utils.corpora.tokenizer import load_tokenizer
from utils.metrics import common, heads, ioi, loss, probes, saes

SMOLLM2_VOCAB = 49_152


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def random_llama(random_model_folders):
    """The suite's 2-layer random Llama (d_model 64) carrying SmolLM2's tokenizer files, loaded from its folder."""
    model = load_model(str(random_model_folders["llama"]), device="cpu")
    assert len(model.tokenizer) == model.cfg.d_vocab == SMOLLM2_VOCAB
    return model


def nll_by_hand(model, text: str) -> torch.Tensor:
    """``-log p`` of each of ``tokens(text) + [EOS]`` after ``[BOS]`` in ``model.tokenizer``'s tokens, text alone."""
    tok = model.tokenizer
    ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id]])
    with torch.no_grad():
        logits = model(ids)
    return -logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]


def n_tokens(tokenizer, text: str) -> int:
    """The number of tokens of ``text`` alone (no BOS)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_names(tokenizer) -> set[str]:
    return {n for n in storyworld.NAMES if len(tokenizer(" " + n, add_special_tokens=False)["input_ids"]) > 1}


def test_smollm2s_tokenizer_is_not_the_course_tokenizer_and_splits_some_names(smollm2):
    # What every test below relies on: a count in one tokenizer differs from the other's.
    assert len(smollm2.tokenizer) == SMOLLM2_VOCAB != len(load_tokenizer())
    assert split_names(smollm2.tokenizer) and not split_names(load_tokenizer())


def test_heldout_loss_reads_the_models_own_tokenizer(smollm2):
    docs = storyworld.sample_docs(seeds.TEST_SAMPLE, 5)
    r = loss.heldout_loss(smollm2, docs)
    by_hand = torch.cat([nll_by_hand(smollm2, d.text) for d in docs])
    assert r["tokens"] == len(by_hand) == sum(n_tokens(smollm2.tokenizer, d.text) + 1 for d in docs)
    assert r["loss"] == pytest.approx(by_hand.mean().item(), abs=1e-4)
    assert 3.5 < r["loss"] < 6  # 9.2 on 24 documents when the course tokenizer's ids were fed to it
    assert r["floor"] == pytest.approx(-sum(d.logprob for d in docs) / r["tokens"])


def test_heldout_loss_keeps_each_batch_of_logits_small_for_a_large_vocabulary(random_llama, monkeypatch):
    shapes = []
    forward = loss.forward_logits

    def recording(model, x):
        shapes.append(tuple(x.shape))
        return forward(model, x)

    monkeypatch.setattr(loss, "forward_logits", recording)
    docs = storyworld.sample_docs(seeds.TEST_SAMPLE, 24)
    batched = loss.heldout_loss(random_llama, docs)
    assert len(shapes) > 1 and max(b * p for b, p in shapes) * SMOLLM2_VOCAB <= common.LOGITS_PER_BATCH
    assert sum(b for b, _ in shapes) == len(docs)
    one_by_one = loss.heldout_loss(random_llama, docs, batch=1)
    assert batched["tokens"] == one_by_one["tokens"]
    assert batched["loss"] == pytest.approx(one_by_one["loss"], abs=1e-5)


def test_song_copy_loss_reads_the_models_own_tokens_of_each_copy(smollm2):
    songs = storyworld.sample_docs(seeds.TEST_SONGS, 2, "song")
    r = loss.song_copy_loss(smollm2, songs)
    first, second = [], []
    for d in songs:
        rep = d.annotations["repeats"][0]
        enc = smollm2.tokenizer(d.text, add_special_tokens=False, return_offsets_mapping=True)
        nll = nll_by_hand(smollm2, d.text)  # nll[i] predicts text token i
        word_len = len(d.text[rep["first"][0] :].split()[0])  # the first word of each copy is left out
        for i, (a, b) in enumerate(enc["offset_mapping"]):
            if not re.search(r"\w", d.text[a:b]):
                continue
            if rep["first"][0] + word_len <= a < rep["first"][1]:
                first.append(nll[i].item())
            elif a >= rep["repeat"][0] + word_len:
                second.append(nll[i].item())
    assert r["song_tokens"] == len(first) + len(second)
    assert r["song_loss_first_copy"] == pytest.approx(sum(first) / len(first), abs=1e-4)
    assert r["song_loss_second_copy"] == pytest.approx(sum(second) / len(second), abs=1e-4)
    assert r["song_loss_second_copy"] < r["song_loss_first_copy"] - 3  # it copies


def test_ioi_keeps_only_documents_whose_names_are_single_tokens_for_the_model(smollm2):
    docs = storyworld.sample_docs(seeds.TEST_SAMPLE, 48, "transfer")
    split = split_names(smollm2.tokenizer)
    whole = [d for d in docs if not {d.annotations["answer"], d.annotations["distractor"]} & split]
    r = ioi.ioi(smollm2, docs)
    assert (r["ioi_prompts"], r["ioi_left_out"]) == (len(whole), len(docs) - len(whole))
    assert 0 < r["ioi_left_out"] < len(docs)
    assert r["ioi_accuracy"] > 0.85 and r["ioi_logit_diff"] > 2  # 0.48 and about 0 with the course tokenizer's ids
    prompts, answers, distractors = ioi.ioi_prompts(docs, smollm2.tokenizer)
    for d, p, a, b in zip(whole, prompts, answers.tolist(), distractors.tolist()):
        assert p == smollm2.to_tokens(d.text[: d.annotations["prompt_end"]])[0].tolist()
        assert smollm2.tokenizer.decode([a, b]) == f" {d.annotations['answer']} {d.annotations['distractor']}"


def test_ioi_refuses_in_one_sentence_when_no_document_has_two_single_token_names(random_llama):
    split = split_names(random_llama.tokenizer)
    docs = [
        d
        for d in storyworld.sample_docs(seeds.TEST_SAMPLE, 200, "transfer")
        if d.annotations["answer"] in split or d.annotations["distractor"] in split
    ][:5]
    with pytest.raises(ValueError, match=r"^none of the 5 transfer documents has two names that are single tokens"):
        ioi.ioi(random_llama, docs)


def test_repeated_random_tokens_draw_the_models_own_tokens_of_storyworld_words(smollm2):
    tok = smollm2.tokenizer
    pool = heads.content_word_pool(tok)
    spaced = {" " + w for w in storyworld.CONTENT_WORDS}
    assert all(tok.decode([t]) in spaced for t in pool) and len(pool) == len(set(pool))
    assert len(pool) == sum(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in spaced)
    for ids, period in heads.repeated_random_tokens(5, seed=seeds.TEST_SAMPLE, tokenizer=tok):
        assert ids[0] == tok.bos_token_id and ids[1 : period + 1] == ids[period + 1 :]
        assert set(ids[1:]) <= set(pool)
        assert tok(tok.decode(ids[1:]), add_special_tokens=False)["input_ids"] == ids[1:]  # real tokens of a text
    everything = heads.all_word_pool(tok)
    assert tok(" the", add_special_tokens=False)["input_ids"][0] in everything and set(pool) <= set(everything)


def test_song_like_random_tokens_work_in_another_tokenizer(smollm2):
    tok = smollm2.tokenizer
    for ids, period in heads.repeated_random_tokens(5, seed=seeds.TEST_SAMPLE, song_like=True, tokenizer=tok):
        text = tok.decode(ids[1:])
        assert not text.startswith(" ") and ids[1] != 0
        assert tok.decode([ids[1]]) == tok.decode([ids[period + 1]]).lstrip(" ")
        assert tok(text, add_special_tokens=False)["input_ids"] == ids[1:]


def test_emotion_dataset_reads_the_stream_at_the_models_own_tokens(smollm2):
    doc = storyworld.sample_docs(seeds.TEST_SAMPLE, 1, "narrative")[0]
    x, y, roles, _, n_sentences = probes.emotion_dataset(smollm2, [doc])
    enc = smollm2.tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    sentences = [s for s in doc.annotations["sentences"] if not s["names_emotion"] and "emotion" in s]
    rows = [
        i + 1  # after the BOS
        for s in sentences
        for i, (a, b) in enumerate(enc["offset_mapping"])
        if a < s["span"][1] and b > s["span"][0]
    ]
    assert n_sentences == len(sentences) and x.shape == (30, len(rows), 576) and len(y) == len(roles) == len(rows)
    hook = "blocks.29.hook_resid_post"
    _, cache = smollm2.run_with_cache(smollm2.to_tokens(doc.text), names_filter=hook)
    assert torch.allclose(x[29], cache[hook][0, rows], atol=1e-4)


def test_evaluate_sae_feeds_the_documents_in_the_models_own_tokens(smollm2):
    from utils.model_zoo.saes import training_sae

    docs = storyworld.sample_docs(seeds.TEST_SAMPLE, 2)
    torch.manual_seed(0)
    sae = training_sae("topk", 576, 1152, 16)
    r = saes.evaluate_sae(smollm2, sae, "blocks.3.hook_resid_post", docs)
    assert r["tokens"] == sum(n_tokens(smollm2.tokenizer, d.text) for d in docs)  # every position after BOS
    assert r["loss_clean"] == pytest.approx(loss.heldout_loss(smollm2, docs)["loss"], abs=1e-4)


def test_patching_pairs_use_only_names_that_are_single_tokens_for_the_model(smollm2):
    pairs = patching_pairs(smollm2, 6, seeds.TEST_SAMPLE)
    split = split_names(smollm2.tokenizer)
    assert not {n for t in pairs.texts for n in re.findall(r"\w+", t)} & split
    assert len(set(pairs.clean.shape)) == 2 and pairs.clean.shape == pairs.corrupted.shape
    assert {"IO", "S1", "S2"} <= set(pairs.labels)
    for row, a, b in zip(pairs.clean, pairs.answers, pairs.distractors):
        assert a in row and b in row


def test_every_measurement_runs_on_a_random_llama_with_smollm2s_tokenizer(random_llama):
    tok = random_llama.tokenizer
    docs = storyworld.sample_docs(seeds.TEST_SAMPLE, 40)
    r = loss.heldout_loss(random_llama, docs)
    assert r["tokens"] == sum(n_tokens(tok, d.text) + 1 for d in docs)  # SmolLM2's tokens, not the course's
    assert loss.song_copy_loss(random_llama, docs)["song_tokens"] > 0
    transfer = [d for d in docs if d.family == "transfer"]
    whole = [d for d in transfer if not {d.annotations["answer"], d.annotations["distractor"]} & split_names(tok)]
    assert ioi.ioi(random_llama, docs)["ioi_prompts"] == len(whole) > 0
    x, y, *_ = probes.emotion_dataset(random_llama, [d for d in docs if d.family == "narrative"][:2])
    assert x.shape[:2] == (2, len(y)) and len(y) > 0
    h = _head_measurements(random_llama, seeds.TEST_SAMPLE, 4)
    assert len(h["induction_scores"]) == 2 and 0 <= h["induction_score_song_like"] <= 1
    assert all(0 <= t < SMOLLM2_VOCAB for t in heads.all_word_pool(tok))


def test_a_model_without_a_tokenizer_is_refused_unless_its_vocabulary_is_the_course_tokenizers(random_llama):
    class Bare(torch.nn.Module):
        def __init__(self, vocab):
            super().__init__()
            self.config = type("Config", (), {"vocab_size": vocab})()

    with pytest.raises(ValueError, match=r"carries no tokenizer and its vocabulary \(49,152 tokens\) is not"):
        common.tokenizer_of(Bare(SMOLLM2_VOCAB))
    assert common.tokenizer_of(Bare(len(load_tokenizer()))) is load_tokenizer()
    assert common.tokenizer_of(random_llama) is random_llama.tokenizer


def test_a_transfer_batch_draws_more_stories_when_the_tokenizer_splits_many_names(random_llama):
    """SmolLM2 tells apart the names of only about half the stories: twice n stories can come up short."""
    from utils.corpora.ioi_batch import names_fit, transfer_batch

    n, seed = 6, 3  # stream 3's first 12 transfer stories hold fewer than 6 with two names SmolLM2 keeps whole
    first = storyworld.sample_docs(seed, 2 * n, "transfer")
    fit = sum(names_fit(random_llama, d.annotations["answer"], d.annotations["distractor"]) for d in first)
    assert fit < n  # the first draw alone would have refused
    big, small = transfer_batch(random_llama, n, seed), transfer_batch(random_llama, 2, seed)
    assert len(big.texts) == n == len(set(big.texts)) == len(big.tokens)
    assert big.texts[:2] == small.texts  # the stories that fit come in the order drawn, whatever n


def test_a_transfer_batch_refuses_in_one_sentence_after_eight_times_n_stories(random_llama, monkeypatch):
    from utils.corpora import ioi_batch

    monkeypatch.setattr(ioi_batch, "names_fit", lambda model, a, b: a.startswith("A"))  # a rare fit
    with pytest.raises(ValueError, match=r"^only \d+ of 80 stories have two names this tokenizer tells apart$"):
        ioi_batch.transfer_batch(random_llama, 10, seeds.TEST_SAMPLE)


def test_the_zoo_sae_activation_cache_refuses_a_model_that_reads_another_tokenizer(random_llama, tmp_path):
    from utils.model_zoo import saes as zoo_saes
    from utils.model_zoo.registry import DEFAULT_SAE, sae_entry

    spec = sae_entry(DEFAULT_SAE)
    with pytest.raises(ValueError, match=r"reads its own tokenizer \(49,152 tokens\), not the course tokenizer"):
        zoo_saes.cached_activations(spec, random_llama, 256, tmp_path / "acts")
    assert not (tmp_path / "acts").exists()  # refused before anything is cached
    rows = torch.zeros(1, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"saes\.fit on its stream over its own tokens"):
        zoo_saes.activations(random_llama, "blocks.0.hook_resid_post", rows)


def test_document_batches_keep_the_logits_of_a_large_vocabulary_small(random_llama):
    from utils.metrics.common import LOGITS_PER_BATCH
    from utils.metrics.saes import document_batches

    docs = storyworld.sample_docs(seeds.TEST_SAMPLE, 60)
    big = list(document_batches(docs, tokenizer=random_llama.tokenizer))
    assert all(x.numel() * SMOLLM2_VOCAB <= LOGITS_PER_BATCH or len(x) == 1 for x, _ in big)
    assert sum(int(m.sum()) for _, m in big) == sum(
        len(random_llama.tokenizer(d.text, add_special_tokens=False)["input_ids"]) + 1 for d in docs
    )  # every token and the end, once
    assert len(list(document_batches(docs))) < len(big)  # the course tokenizer's 985 tokens: larger batches
