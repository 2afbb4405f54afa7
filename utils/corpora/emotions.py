"""Activation datasets for the feeling Storyworld's narratives never name, in any model's tokenizer.

Every narrative sentence after the introductions is about one character (its *subject*) and is
annotated with that character's current emotion: one of 12 at 30° steps on a circle. Sentences
that name the emotion ("Ann felt happy.") are left out, so a probe must read the feeling from
context or from behaviour words, never from the emotion's own name. Each kept token gets a
*role*: the subject's name, a word of the predicate, or punctuation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from utils.corpora import storyworld

ROLES = ("subject", "predicate", "punctuation")
NO_OTHER = -1  # ``other`` in a one-character story
ANGLES = torch.tensor([math.radians(storyworld.emotion_angle(e)) for e in storyworld.EMOTIONS])  # [12]


def label_tokens(text: str, offsets: list[tuple[int, int]], sentences: list[dict]) -> list[tuple[int, int, int]]:
    """``(token index, emotion index, role index)`` for each token of each sentence that has an
    emotion and does not name it, in order. ``offsets`` are the tokens' character spans
    ``[start, end)`` in ``text``; a token belongs to a sentence when their spans overlap. Its
    role is ``subject`` when it ends inside the subject's name, ``predicate`` when its text holds
    a letter, ``punctuation`` otherwise."""
    out = []
    for s in sentences:
        if s["names_emotion"] or "emotion" not in s:
            continue
        start, end = s["span"]
        subject_end = start + len(s["subject"])
        for i, (a, b) in enumerate(offsets):
            if a < end and b > start:
                role = 0 if b <= subject_end else (1 if any(ch.isalpha() for ch in text[a:b]) else 2)
                out.append((i, storyworld.EMOTIONS.index(s["emotion"]), role))
    return out


@dataclass
class EmotionTokens:
    """Narrative documents as one padded batch, and a table of the labelled tokens in them.

    ``tokens`` is ``[doc, position]`` (BOS, the document, padded on the right with BOS); every
    other tensor has one entry per labelled token: its document, position (BOS counted), token
    id, emotion index (its sentence's subject's feeling), role index, the story's cast size (1 or
    2) and, in two-character stories, the *other* character's feeling at that sentence."""

    tokens: torch.Tensor  # [doc, position]
    doc: torch.Tensor  # [row]
    pos: torch.Tensor  # [row]
    token: torch.Tensor  # [row]
    label: torch.Tensor  # [row]
    role: torch.Tensor  # [row]
    cast: torch.Tensor  # [row]
    other: torch.Tensor  # [row]: the other character's emotion index, or NO_OTHER
    source: torch.Tensor  # [row]: position of the word that last named the subject's feeling ("felt sad")
    other_source: torch.Tensor  # [row]: the same for the other character, or NO_OTHER
    texts: list[str]

    def __len__(self) -> int:
        return len(self.label)

    def select(self, docs: torch.Tensor) -> EmotionTokens:
        """Only the stories ``docs`` (indices into ``tokens``), renumbered from 0 in that order."""
        docs = torch.as_tensor(docs)
        new = torch.full((len(self.tokens),), -1, dtype=torch.long)
        new[docs] = torch.arange(len(docs))
        keep = new[self.doc] >= 0
        rows = {
            k: getattr(self, k)[keep]
            for k in ("pos", "token", "label", "role", "cast", "other", "source", "other_source")
        }
        return EmotionTokens(self.tokens[docs], doc=new[self.doc][keep], **rows, texts=[self.texts[d] for d in docs])

    @property
    def angle(self) -> torch.Tensor:
        """Each row's true emotion angle in radians, ``[row]``."""
        return ANGLES[self.label]


def emotion_tokens(model, n: int, seed: int, labeller=label_tokens) -> EmotionTokens:
    """The first ``n`` narrative documents of Storyworld stream ``seed``, tokenized by ``model``'s
    tokenizer, with every token ``labeller`` keeps (``label_tokens`` by default)."""
    docs = storyworld.sample_docs(seed=seed, n=n, family="narrative")
    tok = model.tokenizer
    bos = tok.bos_token_id
    keys = ("doc", "pos", "token", "label", "role", "cast", "other", "source", "other_source")
    rows, cols = [], {k: [] for k in keys}
    for d, doc in enumerate(docs):
        enc = tok(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        ids = [bos] + list(enc["input_ids"])
        rows.append(ids)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        labelled = [s for s in doc.annotations["sentences"] if "emotion" in s and not s["names_emotion"]]
        for i, label, role in labeller(doc.text, offsets, doc.annotations["sentences"]):
            a, b = offsets[i]
            s = next(s for s in labelled if a < s["span"][1] and b > s["span"][0])
            others = [n for n in s["feelings"] if n != s["subject"]]
            named = _named_feelings(doc.annotations["sentences"], s, offsets)
            cols["doc"].append(d)
            cols["pos"].append(i + 1)
            cols["token"].append(ids[i + 1])
            cols["label"].append(label)
            cols["role"].append(role)
            cols["cast"].append(len(doc.annotations["characters"]))
            cols["other"].append(storyworld.EMOTIONS.index(s["feelings"][others[0]]) if others else NO_OTHER)
            cols["source"].append(named[s["subject"]])
            cols["other_source"].append(named[others[0]] if others else NO_OTHER)
    tokens = torch.full((n, max(map(len, rows))), bos, dtype=torch.long)
    for d, r in enumerate(rows):
        tokens[d, : len(r)] = torch.tensor(r)
    return EmotionTokens(tokens, **{k: torch.tensor(v) for k, v in cols.items()}, texts=[d.text for d in docs])


def _named_feelings(sentences: list[dict], before: dict, offsets: list[tuple[int, int]]) -> dict[str, int]:
    """For each character, the position (BOS counted) of the emotion word in the last sentence
    before ``before`` that named their feeling ("Ann felt happy." → " happy")."""
    out = {}
    for s in sentences:
        if s is before:
            break
        if s["kind"] == "feeling":
            start = s["span"][1] - 1 - len(s["emotion"])  # the sentence ends "felt <emotion>."
            out[s["subject"]] = 1 + next(i for i, (a, b) in enumerate(offsets) if a <= start < b)
    return out


def stage_names(n_layers: int) -> list[str]:
    """The hook names of the residual stream's stages: before layer 0 (the embeddings, stage 0),
    then after each layer (stage ``l + 1`` is after layer ``l``)."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(n_layers)]


def residual_stack(model, data: EmotionTokens, batch_size: int = 32, hooks=()) -> torch.Tensor:
    """The residual stream at every labelled token, before layer 0 (the embeddings) and after
    each layer: ``[n_layers + 1, row, d_model]`` (float32, on the CPU). ``hooks`` are
    ``(name, fn)`` pairs kept on the model during the runs (for ablations)."""
    names = stage_names(model.cfg.n_layers)
    device = next(model.parameters()).device
    out = torch.zeros(len(names), len(data), model.cfg.d_model)
    starts = range(0, len(data.tokens), batch_size)
    for start in tqdm(starts, desc="caching the residual stream", unit="batch", leave=False):
        docs = data.tokens[start : start + batch_size]
        keep = (data.doc >= start) & (data.doc < start + len(docs))
        with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
            # only the cache is read: the head unembeds the last position alone (the same activations)
            _, cache = model.run_with_cache(docs.to(device), names_filter=lambda name: name in names, logits_to_keep=1)
        d, p = (data.doc[keep] - start).to(device), data.pos[keep].to(device)
        for s, name in enumerate(names):
            out[s, keep] = cache[name][d, p].float().cpu()
    return out
