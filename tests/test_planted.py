"""Storyworld's planted variables, token by token: each label lands on the tokens the annotations name."""

import pytest
import torch

from utils.corpora import storyworld
from utils.corpora.tokenizer import load_tokenizer
from utils.metrics import planted


@pytest.fixture(scope="module")
def data():
    return planted.planted_tokens(load_tokenizer(), planted.mixed_docs(9300, 40))


def _text(data, rows):
    tok = load_tokenizer()
    return [tok.decode([t]) for t in data.token[rows].tolist()]


def test_mixed_docs_keep_the_generators_family_shares():
    docs = planted.mixed_docs(9300, 40)
    counts = {f: sum(d.family == f for d in docs) for f in storyworld.FAMILIES}
    assert counts == {f: round(40 * share) for f, share in storyworld.FAMILIES.items()}


def test_a_later_start_gives_other_documents():
    first = {d.text for d in planted.mixed_docs(9300, 20)}
    assert first.isdisjoint(d.text for d in planted.mixed_docs(9300, 20, start=100))


def test_every_document_token_is_one_row(data):
    tok = load_tokenizer()
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in data.texts]
    assert len(data) == sum(lengths)
    assert torch.equal(data.tokens[data.doc, data.pos], data.token)


def test_name_labels_sit_on_the_names(data):
    rows = data.name >= 0
    names = [storyworld.NAMES[n] for n in data.name[rows].tolist()]
    assert [t.strip() for t in _text(data, rows)] == names


def _flagged_text(data, flags, d):
    tok = load_tokenizer()
    return tok.decode(data.token[(data.doc == d) & flags].tolist())


def test_answer_next_is_the_token_before_each_transfers_answer(data):
    docs = planted.mixed_docs(9300, 40)
    transfers = [d for d, doc in enumerate(docs) if doc.family == "transfer"]
    assert transfers and torch.equal(data.doc[data.answer_next], torch.tensor(transfers))  # one per transfer
    for d in transfers:
        row = torch.where(data.answer_next & (data.doc == d))[0].item()
        answer = docs[d].annotations["answer"]
        assert data.name[row + 1] == storyworld.NAMES.index(answer), "the next token is the answer's name"


def test_repeat_labels_cover_exactly_the_later_copies(data):
    docs = planted.mixed_docs(9300, 40)
    for flags, family in ((data.song_repeat, "song"), (data.list_repeat, "repetition")):
        mine = [d for d, doc in enumerate(docs) if doc.family == family]
        assert mine and not flags[~torch.isin(data.doc, torch.tensor(mine))].any()
        for d in mine:
            spans = [r["repeat"] for r in docs[d].annotations["repeats"]]
            want = "".join(docs[d].text[a:b] for a, b in spans)
            assert _flagged_text(data, flags, d).replace(" ", "") == want.replace(" ", "")


def test_emotion_labels_only_on_narratives_and_never_on_a_named_feeling(data):
    narrative = data.family == list(storyworld.FAMILIES).index("narrative")
    assert (data.emotion[~narrative] == -1).all()
    named = {" " + e for e in storyworld.EMOTIONS}
    labelled = _text(data, data.emotion >= 0)
    assert labelled and not any(t in named for t in labelled)


def test_streams_at_reads_each_hook_as_a_pass_of_its_own_would(data):
    from utils.model_zoo.models import load_model

    model = load_model("storyworld-4l", device="cpu")
    hooks = ["blocks.0.mlp.hook_in", "blocks.2.hook_resid_post"]
    both = planted.streams_at(model, data, hooks)
    for hook in hooks:
        alone = planted.stream_at(model, data, hook)
        assert both[hook].shape == (len(data), model.cfg.d_model) and torch.allclose(both[hook], alone, atol=1e-5)
        assert both[hook].abs().sum(-1).min() > 0, "every row is filled"
