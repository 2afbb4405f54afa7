"""The shipped tokenizer: size, special tokens, names, round trips, reproducibility."""

import pytest
import torch

from utils.corpora import storyworld as sw
from utils.corpora.tokenizer import (
    EOT,
    TOKENIZER_DIR,
    TokenizerMissing,
    encode_doc,
    load_tokenizer,
    token_spans,
    tokenizer_hash,
    tokens_in_span,
    train,
)

TOK = load_tokenizer()


def test_vocabulary_is_at_most_4096_tokens():
    assert len(TOK) <= 4096


def test_endoftext_is_bos_and_eos():
    assert TOK.bos_token == TOK.eos_token == EOT
    ids = encode_doc("Ann was in the park.", TOK)
    assert ids[0] == ids[-1] == TOK.convert_tokens_to_ids(EOT)


def test_every_first_name_is_exactly_one_token_with_and_without_a_space():
    for name in sw.NAMES:
        for form in (name, " " + name):
            assert len(TOK(form, add_special_tokens=False)["input_ids"]) == 1, form


def test_names_are_single_tokens_inside_real_documents():
    for d in sw.sample_docs(11_111, 100):
        spans = token_spans(d.text, TOK)
        for c in d.annotations["characters"]:
            for s, e in c["spans"]:
                assert len(tokens_in_span(spans, s, e)) == 1


def test_decoding_round_trips_storyworld_text():
    for d in sw.sample_docs(12_345, 200):
        assert TOK.decode(TOK(d.text, add_special_tokens=False)["input_ids"]) == d.text


def test_token_spans_cover_the_text():
    d = sw.sample(1, 0)
    spans = token_spans(d.text, TOK)
    assert spans[0][0] == 0 and spans[-1][1] == len(d.text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_retraining_reproduces_the_shipped_tokenizer(tmp_path):
    train(tmp_path)
    assert tokenizer_hash(tmp_path) == tokenizer_hash(TOKENIZER_DIR)


def test_a_missing_tokenizer_file_says_how_to_rebuild_it_when_loaded_or_hashed(tmp_path):
    for read in (load_tokenizer, tokenizer_hash):
        with pytest.raises(TokenizerMissing, match="rebuild it with: python -m utils.corpora.tokenizer$"):
            read(tmp_path)


def test_the_default_tokenizer_folder_is_looked_up_when_called(tmp_path, monkeypatch):
    from utils import paths

    monkeypatch.setattr(paths, "TOKENIZER_DIR", tmp_path)
    with pytest.raises(TokenizerMissing, match=str(tmp_path)):
        tokenizer_hash()


def test_help_prints_usage_and_leaves_the_tokenizer_alone(monkeypatch, capsys):
    from utils.corpora import tokenizer

    def must_not_train(*a, **k):
        raise AssertionError("--help retrained the tokenizer")

    monkeypatch.setattr(tokenizer, "train", must_not_train)
    with pytest.raises(SystemExit) as e:
        tokenizer.main(["--help"])
    assert e.value.code == 0
    assert "retrain the zoo" in capsys.readouterr().out


def _a_tokenizer_that_splits_rare_names():
    """A small BPE trained on text where "Ann" is common and "Zelda" never appears (as GPT-2's
    tokenizer never saw some of Storyworld's names often enough to keep them whole)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="?"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["?"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(["Ann met Bob and Ann felt happy."] * 50, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe)


def test_split_words_names_each_word_a_tokenizer_cuts_in_pieces_and_its_pieces():
    from utils.corpora.tokenizer import split_words

    tok = _a_tokenizer_that_splits_rare_names()
    split = split_words(tok, [" Ann", " Zelda", " happy"])
    assert list(split) == [" Zelda"] and "".join(split[" Zelda"]) == " Zelda" and len(split[" Zelda"]) > 1
    assert split_words(TOK, [" " + n for n in sw.NAMES + sw.EMOTIONS]) == {}


def test_two_names_fit_a_prompt_only_if_they_take_as_many_tokens_and_start_differently():
    from types import SimpleNamespace

    from utils.corpora.ioi_batch import names_fit

    tok = _a_tokenizer_that_splits_rare_names()

    def to_tokens(text, prepend_bos=False):
        return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])

    model = SimpleNamespace(to_tokens=to_tokens)
    assert names_fit(model, "Ann", "Bob")
    assert not names_fit(model, "Ann", "Zelda")  # one token against several: swapping them changes the length
    assert not names_fit(model, "Ann", "Ann")  # the same first token: the lessons could not tell them apart
