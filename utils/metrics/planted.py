"""Storyworld's planted variables, token by token, for every family at once.

Lesson 06 asks which of them a sparse autoencoder found. Each document is fed as
``[BOS] + tokens``; every token after BOS is one row, with these labels (``-1`` or ``False``
where a variable does not apply):

* ``emotion`` - the feeling of the sentence's subject (index into ``storyworld.EMOTIONS``), on
  the tokens of narrative sentences that do not name it (as in :mod:`utils.corpora.emotions`);
* ``name`` - the character whose name this token is (index into ``storyworld.NAMES``), on the
  first token of every mention of a character;
* ``song_repeat`` - the token lies in the second copy of a song;
* ``list_repeat`` - the token lies in a recurring list, line of names or rhyme (a repetition
  document's later copy);
* ``answer_next`` - the token ends a transfer's prompt, so the next token is its answer (the
  name the object went to).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.corpora import storyworld
from utils.corpora.emotions import label_tokens
from utils.metrics.common import length_groups

VARIABLES = ("emotion", "name", "song_repeat", "list_repeat", "answer_next")


@dataclass
class PlantedTokens:
    """Documents as one right-padded batch ``tokens [doc, position]`` (BOS first, padded with BOS)
    and one row per document token with its position and labels (see the module docstring)."""

    tokens: torch.Tensor  # [doc, position]
    doc: torch.Tensor  # [row]
    pos: torch.Tensor  # [row] (BOS counted)
    token: torch.Tensor  # [row]
    family: torch.Tensor  # [row]: index into list(storyworld.FAMILIES)
    emotion: torch.Tensor  # [row]
    role: torch.Tensor  # [row]: 0 subject name, 1 predicate word, 2 punctuation, -1 not labelled
    name: torch.Tensor  # [row]
    song_repeat: torch.Tensor  # [row] bool
    list_repeat: torch.Tensor  # [row] bool
    answer_next: torch.Tensor  # [row] bool
    texts: list[str]

    def __len__(self) -> int:
        return len(self.doc)


def mixed_docs(seed: int, n: int, start: int = 0) -> list[storyworld.Doc]:
    """``n`` documents of stream ``seed`` in the generator's own proportions of the four families
    (``storyworld.FAMILIES``), each family drawn as its own sub-stream so that the counts are exact;
    ``start`` skips that many documents of each sub-stream (for a second, disjoint sample)."""
    docs = []
    for family, share in storyworld.FAMILIES.items():
        docs += storyworld.sample_docs(seed, round(n * share), family=family, start=start)
    return docs


def _inside(a: int, b: int, spans) -> bool:
    return any(a >= s and b <= e for s, e in spans)


def planted_tokens(tokenizer, docs: list[storyworld.Doc]) -> PlantedTokens:
    """Tokenize ``docs`` with ``tokenizer`` and label every token (see the module docstring)."""
    bos = tokenizer.bos_token_id
    cols: dict[str, list] = {k: [] for k in ("doc", "pos", "token", "family", "emotion", "role", "name")}
    flags: dict[str, list] = {k: [] for k in ("song_repeat", "list_repeat", "answer_next")}
    rows = []
    for d, doc in enumerate(docs):
        enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        ids = [bos] + list(enc["input_ids"])
        rows.append(ids)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        ann = doc.annotations
        feeling = {}
        if doc.family == "narrative":
            feeling = {i: (label, role) for i, label, role in label_tokens(doc.text, offsets, ann["sentences"])}
        mentions = {start: storyworld.NAMES.index(c["name"]) for c in ann["characters"] for start, _ in c["spans"]}
        repeats = [r["repeat"] for r in ann.get("repeats", [])]
        prompt_end = ann.get("prompt_end")
        for i, (a, b) in enumerate(offsets):
            cols["doc"].append(d)
            cols["pos"].append(i + 1)
            cols["token"].append(ids[i + 1])
            cols["family"].append(list(storyworld.FAMILIES).index(doc.family))
            label, role = feeling.get(i, (-1, -1))
            cols["emotion"].append(label)
            cols["role"].append(role)
            start = a + (doc.text[a] == " ")  # a token's leading space belongs to the gap before the word
            cols["name"].append(mentions.get(start, -1))  # a name token starts where a mention starts
            flags["song_repeat"].append(doc.family == "song" and _inside(start, b, repeats))
            flags["list_repeat"].append(doc.family == "repetition" and _inside(start, b, repeats))
            flags["answer_next"].append(prompt_end is not None and b == prompt_end)
    tokens = torch.full((len(docs), max(map(len, rows))), bos, dtype=torch.long)
    for d, r in enumerate(rows):
        tokens[d, : len(r)] = torch.tensor(r)
    out = {k: torch.tensor(v) for k, v in cols.items()}
    out.update({k: torch.tensor(v, dtype=torch.bool) for k, v in flags.items()})
    return PlantedTokens(tokens, **out, texts=[doc.text for doc in docs])


@torch.no_grad()
def stream_at(model, data: PlantedTokens, hook: str, batch_tokens: int = 6000) -> torch.Tensor:
    """The residual stream at ``hook`` on every row of ``data``: ``[row, d_model]`` float32 (CPU).
    Documents of similar length run together (about ``batch_tokens`` tokens a batch), so that
    little time goes into padding."""
    return streams_at(model, data, [hook], batch_tokens)[hook]


@torch.no_grad()
def streams_at(model, data: PlantedTokens, hooks: list[str], batch_tokens: int = 6000) -> dict[str, torch.Tensor]:
    """:func:`stream_at` for several hook points in one pass over the documents: ``{hook: [row, d_model]}``."""
    device = next(model.parameters()).device
    out = {hook: torch.zeros(len(data), model.cfg.d_model) for hook in hooks}
    lengths = torch.bincount(data.doc, minlength=len(data.tokens)) + 1  # BOS included
    order = lengths.argsort().tolist()
    for start, stop in length_groups(lengths[order].tolist(), batch_tokens):
        docs = torch.tensor(order[start:stop])
        n = int(lengths[docs].max())
        # only the cache is read: the head unembeds the last position alone (the same activations)
        _, cache = model.run_with_cache(
            data.tokens[docs, :n].to(device), names_filter=lambda name: name in hooks, logits_to_keep=1
        )
        where = torch.full((len(data.tokens),), -1)
        where[docs] = torch.arange(len(docs))
        keep = where[data.doc] >= 0
        rows, positions = where[data.doc[keep]].to(device), data.pos[keep].to(device)
        for hook in hooks:
            out[hook][keep] = cache[hook][rows, positions].float().cpu()
    return out
