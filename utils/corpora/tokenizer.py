"""The course tokenizer: byte-level BPE trained on Storyworld, shipped in ``data/tokenizer``.

``<|endoftext|>`` (id 0) is both BOS and EOS. A document is fed to a model as
``[BOS] + tokens(text)``, and the model is scored on predicting ``tokens(text) + [EOS]``.

Rebuild with ``python -m utils.corpora.tokenizer`` (deterministic: same corpus seed, same file).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from utils import paths, seeds
from utils.corpora import storyworld
from utils.paths import TOKENIZER_DIR

EOT = "<|endoftext|>"
TOKENIZER_DOCS = 20_000
VOCAB_LIMIT = 4096
REBUILD = "python -m utils.corpora.tokenizer"


class TokenizerMissing(FileNotFoundError):
    """``tokenizer.json`` is not there; the message says how to rebuild it."""


def _tokenizer_file(path: str | Path | None, rebuild: str = REBUILD) -> Path:
    """``path/tokenizer.json`` (default ``data/tokenizer``), or ``TokenizerMissing`` with the fix."""
    folder = Path(paths.TOKENIZER_DIR if path is None else path)
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise TokenizerMissing(
            f"the {_tokenizer_name(rebuild)} tokenizer is missing: "
            f"there is no {paths.shown(file)}; "
            f"restore it with `git checkout -- {paths.shown(folder)}` or rebuild it with: {rebuild}"
        )
    return file


def _tokenizer_name(rebuild: str) -> str:
    """``course`` for the course tokenizer, else the corpus its rebuild command names (``countdown``)."""
    return "course" if rebuild == REBUILD else rebuild.split()[2].rsplit(".", 1)[-1]


def train(out_dir: Path = TOKENIZER_DIR) -> Path:
    """Train the byte-level BPE on Storyworld and save it with HF tokenizer files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_LIMIT,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = (d.text for d in storyworld.sample_docs(seeds.TOKENIZER, TOKENIZER_DOCS))
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT)
    fast.model_max_length = 1024
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def save_word_level(vocab: Sequence[str], pre_tokenizer, max_length: int, out_dir: Path) -> Path:
    """Write a word-level tokenizer as HF tokenizer files: token ``i`` is ``vocab[i]``, ``vocab[0]``
    (``<|endoftext|>``) is BOS, EOS, padding and unknown; ``pre_tokenizer`` cuts a text into words.
    The countdown traces and the belief stories each have one."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=EOT))
    tok.pre_tokenizer = pre_tokenizer
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT)
    fast.model_max_length = max_length
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def load_tokenizer(path: str | Path | None = None, rebuild: str = REBUILD):
    """The course tokenizer (default ``data/tokenizer``; another folder with ``path``) as a
    ``transformers`` fast tokenizer, loaded from disk only; ``TokenizerMissing`` says how to
    rebuild a missing one (with the command ``rebuild``)."""
    return _load(_tokenizer_file(path, rebuild).parent)


@cache
def _load(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)


def tokenizer_hash(path: str | Path | None = None) -> str:
    """sha256 of ``tokenizer.json``: model cards record it to pin the vocabulary."""
    return hashlib.sha256(_tokenizer_file(path).read_bytes()).hexdigest()


# Each training corpus has its own tokenizer: (its folder's name in utils.paths, read when
# needed so that a moved folder is followed, and the command that rebuilds it).
CORPORA = {
    "storyworld": ("TOKENIZER_DIR", REBUILD),
    "countdown": ("COUNTDOWN_TOKENIZER_DIR", "python -m utils.corpora.countdown tokenizer"),
    "beliefs": ("BELIEFS_TOKENIZER_DIR", "python -m utils.corpora.beliefs tokenizer"),
}


def corpus_tokenizer_dir(corpus: str = "storyworld") -> Path:
    """The folder of a training corpus's tokenizer (``"storyworld"``, ``"countdown"`` or ``"beliefs"``)."""
    return getattr(paths, CORPORA[corpus][0])


def corpus_tokenizer(corpus: str = "storyworld"):
    """The tokenizer of a training corpus (``"storyworld"``, ``"countdown"`` or ``"beliefs"``)."""
    return load_tokenizer(corpus_tokenizer_dir(corpus), CORPORA[corpus][1])


def corpus_tokenizer_hash(corpus: str = "storyworld") -> str:
    """sha256 of a corpus's ``tokenizer.json`` (what a model card pins)."""
    file = _tokenizer_file(corpus_tokenizer_dir(corpus), CORPORA[corpus][1])
    return hashlib.sha256(file.read_bytes()).hexdigest()


def document_ends(tokenizer=None) -> tuple[int, int]:
    """The ids ``(BOS, EOS)`` a document starts and ends with in ``tokenizer`` (default the course's):
    its own start and end tokens, as ``model.to_tokens`` prepends them (``<|endoftext|>``, id 0, for
    both in the course tokenizer and in SmolLM2's); a tokenizer that names only one uses it for both,
    one that names neither ``<|endoftext|>``."""
    tokenizer = tokenizer or load_tokenizer()
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None and eos is None:
        if EOT not in tokenizer.get_vocab():
            raise ValueError(f"this tokenizer names no start or end token and has no {EOT}: a document has no ends")
        eot = tokenizer.convert_tokens_to_ids(EOT)
        return eot, eot
    return (eos if bos is None else bos), (bos if eos is None else eos)


def encode_doc(text: str, tokenizer=None) -> list[int]:
    """``[BOS] + tokens(text) + [EOS]``: the unit every loss and floor is computed over, in
    ``tokenizer``'s tokens (default the course's; a measurement of a model passes ``model.tokenizer``)."""
    tokenizer = tokenizer or load_tokenizer()
    bos, eos = document_ends(tokenizer)
    return [bos] + tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]


def word_id(word: str, tokenizer=None) -> int:
    """The single token of ``" " + word`` in ``tokenizer`` (default the course's, in which every
    Storyworld name and content word is one); ``ValueError`` when it is several."""
    tokenizer = tokenizer or load_tokenizer()
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{' ' + word!r} is {len(ids)} tokens, not one")
    return ids[0]


def split_words(tokenizer, words: Sequence[str]) -> dict[str, list[str]]:
    """``{word: its pieces}`` for each of ``words`` that ``tokenizer`` cuts into more than one token.

    The course tokenizer keeps every Storyworld name and feeling whole (after a space, as in a
    sentence); a tokenizer trained on other text may cut a rare one in pieces. The lessons then read
    such a word by its first token."""
    out = {}
    for word in words:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) > 1:
            out[word] = [tokenizer.decode([i]) for i in ids]
    return out


def token_spans(text: str, tokenizer=None) -> list[tuple[int, int]]:
    """Character span ``[start, end)`` of each token of ``text`` (no BOS) in ``tokenizer``'s tokens
    (default the course's).

    Byte-level BPE puts the space before a word into the word's token; spans here cover
    the token's characters including that space.
    """
    tokenizer = tokenizer or load_tokenizer()
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


def tokens_in_span(spans: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of tokens (into ``spans``) whose text overlaps characters ``[start, end)``."""
    return [i for i, (s, e) in enumerate(spans) if s < end and e > start]


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog=REBUILD,
        description=f"Retrain the course tokenizer on {TOKENIZER_DOCS:,} Storyworld documents and write it to "
        f"{paths.shown(TOKENIZER_DIR)} (deterministic: the same Storyworld gives the same file). Every zoo "
        "model is trained with this tokenizer: retrain the zoo after changing it.",
    )
    ap.parse_args(argv)
    out = train()
    tok = load_tokenizer(out)
    print(f"wrote {out} ({len(tok)} tokens, sha256 {tokenizer_hash(out)[:12]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
