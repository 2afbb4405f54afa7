"""Clean and corrupted indirect-object prompts of one template, for activation patching.

A *template* is a transfer story's opening and filler: ("As", " after lunch,") gives
"As A and B walked to the PLACE after lunch, S VERB the OBJECT to". All prompts of one
template have the same words at the same places, so (with single-token names, places and
objects, as in the zoo's tokenizer) their tokens line up position by position, and a
patching sweep over positions means the same thing on every prompt.

Corruptions keep every token but the names:

* ``"swap"``: the two names exchanged everywhere; the corrupted answer is the clean distractor.
* ``"s2"``: only the repeated name (S2) replaced by the other one; the answer flips too.
* ``"abc"``: S2 replaced by a third name, so no name is repeated and nothing picks an answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from utils.corpora import storyworld
from utils.corpora.ioi_batch import name_pieces, name_token

OPENINGS = tuple(o for o, _ in storyworld.TRANSFER_OPENINGS)
FILLERS = storyworld.TRANSFER_FILLERS
TEMPLATES = tuple((o, f) for o in OPENINGS for f in FILLERS)
CORRUPTIONS = ("swap", "s2", "abc")


def exchange_names(text: str, a: str, b: str) -> str:
    """Every whole-word ``a`` becomes ``b`` and every ``b`` becomes ``a``, in one pass."""
    return re.sub(rf"\b({re.escape(a)}|{re.escape(b)})\b", lambda m: b if m.group(0) == a else a, text)


def replace_last(text: str, old: str, new: str) -> str:
    """The last whole-word ``old`` replaced by ``new``."""
    starts = [m.start() for m in re.finditer(rf"\b{re.escape(old)}\b", text)]
    return text[: starts[-1]] + new + text[starts[-1] + len(old) :]


def _subject_first(doc, text: str) -> bool:
    """Does the subject (the repeated name) come before the answer in the opening?"""
    first = {m.group(0): m.start() for m in reversed(list(re.finditer(r"\b\w+\b", text)))}
    return first[doc.annotations["distractor"]] < first[doc.annotations["answer"]]


def template_of(doc) -> tuple[str, str]:
    """(opening, filler) of a transfer document's first transfer."""
    text = doc.text[: doc.annotations["prompt_end"]]
    opening = text.split()[0]
    place_end = max(text.find(" " + p) + len(p) + 1 for p in storyworld.PLACES if " " + p in text)
    filler = next(f for f in FILLERS if text.startswith(f, place_end))
    return opening, filler


def single_token_names(model, *names: str) -> bool:
    """Whether ``model``'s tokenizer keeps each of ``names`` (after a space) in one token: always with the
    course tokenizer; SmolLM2's cuts 7 of the 24 Storyworld names in pieces."""
    return all(len(name_pieces(model, name)) == 1 for name in names)


@dataclass
class PatchingPairs:
    clean: torch.Tensor  # [batch, position]: BOS + prompt; every prompt has the same length
    corrupted: torch.Tensor  # [batch, position]: the same prompts with the names changed
    answers: torch.Tensor  # [batch]: the clean answer's token id
    distractors: torch.Tensor  # [batch]: the clean distractor's token id
    texts: list[str]
    corrupted_texts: list[str]
    labels: list[str]  # one label per position: "IO", "S1", "S2", "end" or the token itself
    template: tuple[str, str]
    corruption: str

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device) -> PatchingPairs:
        moved = {k: getattr(self, k).to(device) for k in ("clean", "corrupted", "answers", "distractors")}
        rest = {k: getattr(self, k) for k in ("texts", "corrupted_texts", "labels", "template", "corruption")}
        return PatchingPairs(**moved, **rest)


def patching_pairs(
    model,
    n: int,
    seed: int,
    template: tuple[str, str] | None = None,
    corruption: str = "swap",
    subject_first: bool | None = None,
) -> PatchingPairs:
    """``n`` transfer prompts of one template (the first template of the stream when None).

    Draws documents from the stream ``seed`` until ``n`` of them have the template, two names that
    are single tokens of the model's tokenizer (all of them in the course tokenizer), the
    template's usual token length and one order of the two names (``subject_first``; when
    None, the first prompt's order), so that every position plays one role in every prompt: ``IO`` the
    answer's name, ``S1`` and ``S2`` the subject's two mentions. Builds the corrupted prompt of
    each by ``corruption`` (a third name, for ``"abc"``, is a single token too).
    """
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption should be one of {CORRUPTIONS}, not {corruption!r}")
    picked, start, length, order = [], 0, None, subject_first
    while len(picked) < n:
        for doc in storyworld.sample_docs(seed=seed, n=200, family="transfer", start=start):
            template = template or template_of(doc)
            if template_of(doc) != template:
                continue
            if not single_token_names(model, doc.annotations["answer"], doc.annotations["distractor"]):
                continue  # before the length is fixed: a name in pieces would set it
            text = doc.text[: doc.annotations["prompt_end"]]
            tokens = model.to_tokens(text)[0].cpu()
            length = length or len(tokens)
            order = order if order is not None else _subject_first(doc, text)
            if len(tokens) == length and _subject_first(doc, text) == order:
                picked.append((doc, text, tokens))
        start += 200
        if start > 20_000:
            raise ValueError(
                f"fewer than {n} prompts of template {template} with two single-token names in the first 20,000 stories"
            )
    picked = picked[:n]
    names = list(storyworld.NAMES)
    rows, bad, texts, corrupted_texts = [], [], [], []
    for k, (doc, text, tokens) in enumerate(picked):
        io, s = doc.annotations["answer"], doc.annotations["distractor"]
        if corruption == "swap":
            other = exchange_names(text, io, s)
        elif corruption == "s2":
            other = replace_last(text, s, io)
        else:
            thirds = [x for x in names if x not in (io, s) and single_token_names(model, x)]  # all others, in the zoo
            third = thirds[k % len(thirds)]
            other = replace_last(text, s, third)
        bad_tokens = model.to_tokens(other)[0].cpu()
        if len(bad_tokens) != len(tokens):
            raise ValueError(f"the corrupted prompt {other!r} tokenizes to another length than {text!r}")
        rows.append(tokens)
        bad.append(bad_tokens)
        texts.append(text)
        corrupted_texts.append(other)
    doc0, _, tokens0 = picked[0]
    role = {
        name_token(model, doc0.annotations["answer"]): "IO",
        name_token(model, doc0.annotations["distractor"]): "S1",
    }
    labels, seen = [], set()
    for t in tokens0.tolist():
        if t in role:
            labels.append(role[t] if t not in seen else "S2")
            seen.add(t)
        else:
            labels.append(model.to_string(torch.tensor([t])))
    labels[0], labels[-1] = "BOS", "end"
    return PatchingPairs(
        clean=torch.stack(rows),
        corrupted=torch.stack(bad),
        answers=torch.tensor([name_token(model, d.annotations["answer"]) for d, _, _ in picked]),
        distractors=torch.tensor([name_token(model, d.annotations["distractor"]) for d, _, _ in picked]),
        texts=texts,
        corrupted_texts=corrupted_texts,
        labels=labels,
        template=template,
        corruption=corruption,
    )
