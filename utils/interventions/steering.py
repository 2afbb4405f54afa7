"""Steering prompts, batched greedy generation, and an exact reading of what a continuation expresses.

A Storyworld narrative shows a character's feeling through word choices whose probabilities the
generator knows for every one of the 12 emotions: the behaviour, its manner, the object picked
up, what is said and the punctuation. So the feeling a generated sentence *expresses* can be read
exactly: score the sentence under each emotion with :func:`utils.corpora.storyworld.score` and compare
the 12 log-likelihoods. Whether a continuation is still Storyworld is exact too: the whole text
either parses as a document or it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from tqdm.auto import tqdm

from utils.corpora import storyworld

EMOTIONS = storyworld.EMOTIONS
ENDINGS = (".", "!", '"')  # a sentence ends with one of these characters (then a space, or the end)


@dataclass
class Prompt:
    """The start of a story, cut inside a sentence about ``name`` that begins at character
    ``start`` (the space before the name): after the name ("... Ann"), or after "felt"."""

    text: str
    name: str
    emotion: int | None  # the feeling the story has named for the character so far, if any
    start: int


def story_prompts(n: int, seed: int, named: bool = True) -> list[Prompt]:
    """``n`` prompts from one-character stories of stream ``seed``. With ``named``, the opening,
    the named first feeling, and the name that starts the next sentence ("Ann was in the park.
    Ann felt calm. Ann"); without, the opening and "Ann felt", so that the model picks the
    feeling itself ("Ann was in the park. Ann felt")."""
    out, index = [], 0
    while len(out) < n:
        doc = storyworld.sample(seed, index, family="narrative")
        index += 1
        sentences = doc.annotations["sentences"]
        if len(doc.annotations["characters"]) != 1 or len(sentences) < 3:
            continue
        name = sentences[1]["subject"]
        if named:
            end = sentences[1]["span"][1]
            out.append(Prompt(f"{doc.text[:end]} {name}", name, EMOTIONS.index(sentences[1]["emotion"]), end))
        else:
            start = sentences[1]["span"][0] - 1
            out.append(Prompt(f"{doc.text[:start]} {name} felt", name, None, start))
    return out


@lru_cache(maxsize=100_000)
def sentence_loglik(name: str, sentence: str) -> tuple[float, ...]:
    """log P(``sentence`` | the subject feels emotion k) for k = 0..11, under the generator.

    ``sentence`` is one narrative sentence about ``name``, with its leading space (" Ann smiled
    warmly."). An emotion under which the sentence cannot be written gets ``-inf``; a sentence
    that is not Storyworld at all gets ``-inf`` for every emotion."""
    out = []
    for emotion in EMOTIONS:
        # Everything but the sentence has the same probability under every emotion, so the
        # differences between the 12 scores are the sentence's own log-likelihoods.
        text = f"{name} was in the park. {name} felt {emotion}.{sentence}"
        try:
            out.append(storyworld.score(text, family="narrative").logprob)
        except storyworld.ParseError:
            out.append(-math.inf)
    finite = [x for x in out if x > -math.inf]
    shift = max(finite) if finite else 0.0
    return tuple(x - shift for x in out)


def split_sentences(text: str, start: int = 0) -> list[tuple[int, int]]:
    """Character spans ``[a, b)`` of the complete sentences of ``text`` from ``start`` on, each
    with its leading space. A sentence ends at ".", "!" or a closing quote followed by a space or
    the end; "!!", "..." and '!"' end where their last character does."""
    spans, a = [], start
    for k, ch in enumerate(text[start:], start):
        nxt = text[k + 1] if k + 1 < len(text) else " "
        if ch in ENDINGS and nxt == " " and not (ch == '"' and text[k - 1] == ","):
            spans.append((a, k + 1))
            a = k + 1
    return spans


@dataclass
class Reading:
    """What one continuation of a prompt says: is the story still Storyworld (``valid``), and the
    log-likelihood under each emotion of each sentence it wrote about the character."""

    text: str  # the continuation alone
    valid: bool
    loglik: list[tuple[float, ...]]  # one 12-tuple per complete sentence about the character

    @property
    def first(self) -> int | None:
        """The emotion the first sentence expresses best (None when there is none, or none fits)."""
        if not self.loglik or max(self.loglik[0]) == -math.inf:
            return None
        return max(range(len(EMOTIONS)), key=lambda k: self.loglik[0][k])

    @property
    def total(self) -> tuple[float, ...]:
        """The log-likelihood of all the character's sentences together under each emotion (their
        sum: each sentence read as if the feeling were named just before it); all ``-inf`` when
        there is no sentence or none fits."""
        if not self.loglik:
            return (-math.inf,) * len(EMOTIONS)
        return tuple(sum(row[k] for row in self.loglik) for k in range(len(EMOTIONS)))

    @property
    def emotion(self) -> int | None:
        """The emotion the continuation as a whole expresses best (None when none fits)."""
        total = self.total
        if max(total) == -math.inf:
            return None
        return max(range(len(EMOTIONS)), key=lambda k: total[k])


def read_continuation(prompt: Prompt, continuation: str, ended: bool) -> Reading:
    """Score ``prompt.text + continuation``. ``ended`` says the model chose to end the document
    there; otherwise the text is cut after its last complete sentence. ``valid`` needs at least
    one complete new sentence and the whole text parsing as a Storyworld document."""
    full = prompt.text + continuation
    start = prompt.start
    spans = split_sentences(full, start)
    cut = len(full) if ended else (spans[-1][1] if spans else start)
    try:
        storyworld.score(full[:cut], family="narrative")
        valid = bool(spans)
    except storyworld.ParseError:
        valid = False
    loglik = []
    for a, b in spans:
        if not full.startswith(" " + prompt.name + " ", a):
            break
        loglik.append(sentence_loglik(prompt.name, full[a:b]))
    return Reading(continuation, valid, loglik)


def feeling_free_positions(text: str, offsets: list[tuple[int, int]], sentences: list[dict]) -> list[int]:
    """Positions (BOS counted) whose next token the generator chooses without looking at any
    feeling: the position just before the first token of every sentence after the opening, where
    the story says who acts next (or, for an introduction, writes the name it must). ``offsets``
    are the tokens' character spans in ``text`` (no BOS). The name's token is the first that
    overlaps the sentence; with BOS counted, the token before it sits at that token's own index."""
    out = []
    for s in sentences[1:]:
        start, end = s["span"]
        out.append(next(i for i, (a, b) in enumerate(offsets) if a < end and b > start))
    return out


def prompt_tokens(model, prompts: list[Prompt]) -> list[list[int]]:
    """Each prompt as token ids in ``model``'s tokenizer, BOS first."""
    tok = model.tokenizer
    return [[tok.bos_token_id] + tok(p.text, add_special_tokens=False)["input_ids"] for p in prompts]


WHERE = ("prompt", "new", "all")


def steering_hook(name: str, vectors: torch.Tensor, where: str = "prompt"):
    """A hook for :func:`generate` that adds ``vectors`` to the activation ``name``.

    ``vectors`` is one vector ``[d_model]`` for every prompt or one per prompt
    ``[prompt, d_model]``. ``where``: ``"prompt"`` adds it at every prompt position after BOS,
    ``"new"`` at the last prompt position and every generated token, ``"all"`` at both."""
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}, not {where!r}")

    def make(n: int, rows: list[int]):
        v = vectors if vectors.ndim == 1 else vectors[rows][:, None]  # [d] or [batch, 1, d]

        def add(act, hook):
            start, stop = (n - 1, None) if where == "new" else (1, n if where == "prompt" else None)
            act[:, start:stop] += v.to(act.device, act.dtype)
            return act

        return name, add

    return make


def generate(model, prompts: list[Prompt], n_new: int, hooks=(), desc: str | None = None) -> list[Reading]:
    """Greedy continuations of every prompt, ``n_new`` tokens each, with ``hooks`` on the model,
    read by :func:`read_continuation`. Prompts of one token length run as one batch.

    A hook may be a ``(name, fn)`` pair, or a function ``f(n, rows)`` of the prompt length ``n``
    (BOS counted) and the indices of the prompts in the batch that returns one (as
    :func:`steering_hook` does), for hooks that depend on positions or on the prompt."""
    ids = prompt_tokens(model, prompts)
    device = next(model.parameters()).device
    eos = model.tokenizer.eos_token_id
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(ids):
        groups.setdefault(len(r), []).append(i)
    out: list[Reading | None] = [None] * len(prompts)
    for n, idx in tqdm(groups.items(), desc=desc or "generating", unit="batch", leave=False, disable=desc is None):
        x = torch.tensor([ids[i] for i in idx], device=device)
        live = [h(n, idx) if callable(h) and not isinstance(h, tuple) else h for h in hooks]
        with torch.no_grad(), model.hooks(fwd_hooks=live):
            for _ in range(n_new):
                # the head unembeds the last position alone: the same logits, without the other positions' (with a
                # 49,152-token vocabulary that is most of a small model's pass)
                nxt = model(x, logits_to_keep=1)[:, -1].argmax(-1, keepdim=True)
                x = torch.cat([x, nxt], 1)
        for row, i in enumerate(idx):
            new = x[row, n:].tolist()
            ended = eos in new
            if ended:
                new = new[: new.index(eos)]
            out[i] = read_continuation(prompts[i], model.tokenizer.decode(new), ended)
    return out
