"""Storyworld: a seeded generator of short English documents with known latent variables.

Four document families:

* ``narrative``  - one or two characters in a place; each feels one of 12 emotions on a
  circle (angle 0°, 30°, ... 330°; valence = cos θ, arousal = sin θ). Most sentences show
  the feeling only through behaviour whose word choice depends on the angle (the verb, its
  manner, the object picked up, what is said and even the final punctuation: ".", "!",
  "!!" or "..."); feelings drift to neighbouring emotions and are named again when they do.
* ``transfer``   - indirect-object identification: "When Ann and Bob went to the park,
  Bob gave the kite to Ann."
* ``repetition`` - a list, a line of names or a rhyme that recurs verbatim later, after a
  random number of filler sentences and a marker ("... again:").
* ``song``       - distinct random words, then the same words again, with nothing to
  announce or separate the copies: only a reader that looks up where the current word
  occurred before (an induction head) can continue the second copy.

Every document is produced by a sequence of random choices, each of which writes its own
text at once, and no two options of a choice can start the same way. So each text has
exactly one derivation, and :func:`score` recovers it from the surface form alone: it runs
the *same* generator code, reading each choice back from the text instead of drawing it.
``logprob`` is therefore the exact log-probability of the text under the generator,
including the decision to stop (the ``<|endoftext|>`` token).

Annotations are character offsets into ``text``; :mod:`utils.corpora.tokenizer` maps them to tokens.

Command line::

    python -m utils.corpora.storyworld sample --seed 0 --n 5 [--family narrative]
    python -m utils.corpora.storyworld score < docs.jsonl

``score`` names each line it cannot score on stderr, in one sentence with the fix, scores
the others and exits 1. A reader that goes away (``| head``) ends ``sample`` quietly with
exit 141, Ctrl-C with 130.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from utils.corpora import cli

__all__ = [
    "EMOTIONS",
    "NAMES",
    "FAMILIES",
    "Doc",
    "ParseError",
    "sample",
    "sample_docs",
    "score",
    "emotion_angle",
]

# ---------------------------------------------------------------------------------------
# Vocabulary

NAMES = (
    "Ann",
    "Bob",
    "Cara",
    "Dan",
    "Eve",
    "Finn",
    "Gail",
    "Hugo",
    "Ivy",
    "Jack",
    "Kate",
    "Leo",
    "Mia",
    "Nora",
    "Omar",
    "Paul",
    "Rosa",
    "Sam",
    "Tess",
    "Uma",
    "Vera",
    "Will",
    "Yara",
    "Zoe",
)

# Emotion k sits at angle 30·k degrees: valence = cos, arousal = sin.
EMOTIONS = (
    "pleased",
    "happy",
    "excited",
    "alert",
    "tense",
    "angry",
    "miserable",
    "sad",
    "bored",
    "sleepy",
    "relaxed",
    "calm",
)

PLACES = ("park", "kitchen", "garden", "forest", "library", "market", "school", "beach", "station", "yard")
AT_PLACES = ("market", "beach", "station")  # "at the beach"; the others take "in the"
OBJECTS = (
    "kite",
    "ball",
    "book",
    "cup",
    "lamp",
    "hat",
    "drum",
    "apple",
    "bell",
    "box",
    "key",
    "map",
    "coat",
    "shell",
    "clock",
    "flower",
)

# Behaviour that depends on the whole angle: (word, preferred angle in degrees).
BEHAVIOURS = (
    ("smiled", 0),
    ("laughed", 30),
    ("cheered", 60),
    ("listened", 90),
    ("fidgeted", 120),
    ("shouted", 150),
    ("groaned", 180),
    ("cried", 210),
    ("sighed", 240),
    ("yawned", 270),
    ("rested", 300),
    ("hummed", 330),
)
INTERJECTIONS = (
    ("Nice", 0),
    ("Yay", 30),
    ("Wow", 60),
    ("Look", 90),
    ("Oh no", 120),
    ("Stop", 150),
    ("Ugh", 180),
    ("Oh dear", 210),
    ("Meh", 240),
    ("Goodnight", 270),
    ("Ahh", 300),
    ("Fine", 330),
)
# Manner, like behaviour, depends on the whole angle: (word, preferred angle in degrees).
MANNERS = (
    ("warmly", 0),
    ("brightly", 30),
    ("eagerly", 60),
    ("carefully", 90),
    ("nervously", 120),
    ("fiercely", 150),
    ("bitterly", 180),
    ("tearfully", 210),
    ("dully", 240),
    ("drowsily", 270),
    ("lazily", 300),
    ("gently", 330),
)
# How a sentence that shows a feeling ends depends on the whole angle too, so that even its
# last word is followed by something the feeling predicts: (punctuation, preferred angle).
ENDINGS = ((".", 330), ("!", 60), ("!!", 150), ("...", 240))
ENDING_SHARPNESS = 3.0
# Which object a character picks up leans on the feeling as well: object i prefers 22.5°·i.
OBJECT_SHARPNESS = 2.0
# What a character does with an object depends on valence only: (words, weight on cos θ).
OBJECT_VERBS = (("hugged", 1.0), ("held", 0.5), ("looked at", 0.0), ("dropped", -0.5), ("kicked", -1.0))
# κ in P(word | θ) ∝ exp(κ · cos(θ − φ_word)). Sharp enough that neighbouring emotions
# (30° apart) lead to clearly different words, so a reader must track the exact emotion.
SHARPNESS = 6.0
AXIS_SHARPNESS = 2.0  # object verbs: P(verb | valence) ∝ exp(κ · loading · cos θ)

# Transfer templates: (opening word, verb phrase before the place).
TRANSFER_OPENINGS = (
    ("When", "went to the"),
    ("After", "arrived at the"),
    ("While", "were at the"),
    ("As", "walked to the"),
)
TRANSFER_FILLERS = (",", " on a sunny day,", " in the morning,", " after lunch,")
TRANSFER_VERBS = ("gave", "handed", "passed", "threw", "sent")

# Repetition pools.
LIST_ITEMS = OBJECTS + (
    "bread",
    "milk",
    "cheese",
    "plum",
    "pear",
    "rice",
    "soup",
    "cake",
    "egg",
    "corn",
    "cat",
    "dog",
    "fox",
    "owl",
    "hen",
    "cow",
    "pig",
    "frog",
    "bee",
    "duck",
    "goat",
    "mouse",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "red",
    "blue",
    "green",
    "yellow",
    "pink",
    "brown",
    "black",
    "white",
)
RHYME_ADJECTIVES = ("big", "small", "red", "blue", "green", "old", "new", "soft", "tall", "round")
RHYME_NOUNS = OBJECTS + ("cat", "dog", "fox", "owl", "hen", "cow", "pig", "frog")
RHYME_VERBS = ("sat", "ran", "hid", "slept", "danced", "jumped")
FILLERS = (
    " The wind blew.",
    " A bird sang.",
    " It began to rain.",
    " The sun came out.",
    " Time passed.",
    " Nobody spoke.",
    " A bell rang.",
    " The clock ticked.",
)

# Content words: what the stories are about.
CONTENT_WORDS = tuple(
    sorted(
        set(
            NAMES
            + PLACES
            + OBJECTS
            + EMOTIONS
            + LIST_ITEMS
            + RHYME_ADJECTIVES
            + RHYME_VERBS
            + tuple(b for b, _ in BEHAVIOURS)
            + tuple(m for m, _ in MANNERS)
        )
    )
)
# Every other word the families write after a space: function words, sentence openings, the
# verbs and nouns of the transfer, object and repetition frames, the fillers, what is said.
FRAME_WORDS = (
    "A", "After", "As", "It", "Nobody", "The", "Time", "We", "When", "While",
    "a", "after", "again", "and", "arrived", "at", "began", "bird", "blew", "came", "children",
    "day", "dear", "dropped", "felt", "gave", "handed", "held", "hugged", "in", "kicked",
    "learned", "lined", "list", "looked", "lunch", "made", "morning", "no", "on", "out",
    "passed", "rain", "rang", "read", "rhyme", "said", "sang", "sent", "spoke", "sun", "sunny",
    "the", "threw", "ticked", "to", "up", "walked", "was", "we", "went", "were", "wind",
)  # fmt: skip
WORDS = tuple(sorted(set(CONTENT_WORDS + FRAME_WORDS)))
# Songs draw from every word, function words included, so that copying is a generic skill
# rather than one that works on content words only.
SONG_WORDS = WORDS
FAMILIES = {"narrative": 0.45, "transfer": 0.25, "repetition": 0.15, "song": 0.15}

# Lengths and stopping.
MAX_BODY = 10  # narrative sentences after the introductions
P_STOP_NARRATIVE = 0.15
MAX_TRANSFERS = 3
P_STOP_TRANSFER = 0.6
MAX_REPEATS = 2
MAX_FILLERS = 6
SONG_MIN, SONG_MAX = 4, 48  # words in a song (uniform)


def emotion_angle(emotion: str) -> int:
    """Angle of an emotion on the circle, in degrees (0, 30, ..., 330)."""
    return 30 * EMOTIONS.index(emotion)


# ---------------------------------------------------------------------------------------
# One derivation: sampled from an RNG, or read back from a text


class ParseError(ValueError):
    """The text is not a Storyworld document (or would have more than one derivation).

    When the text stops fitting, ``at`` is the character where it goes wrong, ``expected``
    the texts the generator could have written there (``None`` for the end of the text)
    and ``found`` what the text has instead.
    """

    def __init__(self, message: str, at: int | None = None, expected=(), found: str = ""):
        super().__init__(message)
        self.at, self.expected, self.found = at, tuple(expected), found


END = None  # the option that ends the document (it writes the <|endoftext|> token)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


def _joins(a: str, b: str) -> bool:
    """Would characters ``a`` and ``b`` side by side belong to one unit (a word, "..." or "!!")?"""
    return (_is_word_char(a) and _is_word_char(b)) or (a == b and a in ".!")


class _Writer:
    """Make the choices of one derivation and write its text.

    In sampling mode (``rng`` given) each choice is drawn; in scoring mode (``text`` given)
    each choice is the unique option whose text comes next. Either way the log-probability
    of every choice is added to ``logprob``. The text is built with a leading space (every
    chunk starts with a space or punctuation) that the final document drops.
    """

    def __init__(self, rng: random.Random | None = None, text: str | None = None):
        assert (rng is None) != (text is None)
        self.rng = rng
        self.target = None if text is None else " " + text
        self.chunks: list[str] = []
        self.pos = 0  # length of the text written so far (with the leading space)
        self.logprob = 0.0
        self.ended = False

    # -- positions, in offsets of the final text (leading space dropped)
    def here(self) -> int:
        return self.pos - 1

    def _write(self, chunk: str) -> None:
        self.chunks.append(chunk)
        self.pos += len(chunk)

    def _fits(self, chunk: str | None) -> bool:
        """Does ``chunk`` come next in the target text, ending at a word boundary?"""
        t = self.target
        if chunk is END:
            return self.pos == len(t)
        if not t.startswith(chunk, self.pos):
            return False
        after = self.pos + len(chunk)
        return not (after < len(t) and _joins(chunk[-1], t[after]))

    def emit(self, chunk: str) -> None:
        """Write text that the derivation so far determines (probability 1)."""
        if self.target is not None and not self._fits(chunk):
            raise self._mismatch([chunk])
        self._write(chunk)

    def _mismatch(self, options: Sequence[str | None]) -> ParseError:
        """The error for a text that has none of ``options`` next (scoring mode)."""
        # The chunk at ``pos`` starts one character earlier in the text (the leading space
        # is not part of it); at the very start the first real character is 0.
        at = max(self.pos - 1, 0)
        found = self.target[at + 1 : at + 13]
        if self.pos == 0:  # nothing written yet: the options' leading space is not in the text
            options = [o if o is END else o[1:] for o in options]
        error = ParseError("", at, options, found)
        error.args = (_describe(error),)
        return error

    def pick(self, chunks: Sequence[str | None], probs: Sequence[float]) -> int:
        """Choose one option; its chunk is written at once. Returns the option's index."""
        total = math.fsum(probs)
        if self.rng is not None:
            u = self.rng.random() * total
            acc, i = 0.0, len(probs) - 1
            for j, p in enumerate(probs):
                acc += p
                if u < acc and p > 0:
                    i = j
                    break
            while probs[i] <= 0:  # rounding at the very top of the range
                i -= 1
        else:
            hits = [j for j, (c, p) in enumerate(zip(chunks, probs)) if p > 0 and self._fits(c)]
            if not hits:
                raise self._mismatch([c for c, p in zip(chunks, probs) if p > 0])
            if len(hits) > 1:
                raise ParseError(f"ambiguous at character {max(self.here(), 0)}: {[chunks[j] for j in hits]} all fit")
            i = hits[0]
        self.logprob += math.log(probs[i] / total)
        if chunks[i] is END:
            self.ended = True
        else:
            self._write(chunks[i])
        return i

    def uniform(self, chunks: Sequence[str]) -> int:
        return self.pick(chunks, [1.0] * len(chunks))

    def text(self) -> str:
        return "".join(self.chunks)[1:]


def _describe(error: ParseError, shown: int = 3) -> str:
    """``at character 3 expected ' was' or ' felt', found '.'``: short, whatever the options."""
    options = list(dict.fromkeys(error.expected))  # several families may expect the same
    words = ["the end of the text" if o is END else repr(o) for o in options[:shown]]
    if len(options) > shown:
        words.append(f"{len(options) - shown} more")
    wanted = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    found = repr(error.found) if error.found else "the end of the text"
    return f"at character {error.at} expected {wanted}, found {found}"


def _circular_weights(angle: int, preferred: Sequence[float], sharpness: float = SHARPNESS) -> list[float]:
    return [math.exp(sharpness * math.cos(math.radians(angle - phi))) for phi in preferred]


def _axis_weights(value: float, loadings: Sequence[float]) -> list[float]:
    return [math.exp(AXIS_SHARPNESS * s * value) for s in loadings]


# ---------------------------------------------------------------------------------------
# The families. Each writes one document and returns its annotations.


def _mention(ann: dict, name: str, start: int) -> None:
    ann["characters"].setdefault(name, []).append([start, start + len(name)])


def _narrative(w: _Writer) -> dict:
    ann: dict[str, Any] = {"characters": {}, "sentences": []}
    feeling: dict[str, int] = {}  # name -> emotion index

    def sentence(start: int, kind: str, subject: str | None, names_emotion: bool) -> None:
        s = {
            "span": [start, w.here()],
            "kind": kind,
            "subject": subject,
            "names_emotion": names_emotion,
            "feelings": {n: EMOTIONS[k] for n, k in feeling.items()},
        }
        if subject is not None and subject in feeling:
            k = feeling[subject]
            s.update(
                emotion=EMOTIONS[k],
                angle=30 * k,
                valence=round(math.cos(math.radians(30 * k)), 6),
                arousal=round(math.sin(math.radians(30 * k)), 6),
            )
        ann["sentences"].append(s)

    def manner(angle: int) -> None:
        w.pick([" " + m for m, _ in MANNERS], _circular_weights(angle, [phi for _, phi in MANNERS]))

    def ending(angle: int) -> None:
        w.pick([e for e, _ in ENDINGS], _circular_weights(angle, [phi for _, phi in ENDINGS], ENDING_SHARPNESS))

    # Opening: "Ann was in the park." or "Ann and Bob were in the park."
    start = w.here() + 1
    first = NAMES[w.uniform([" " + n for n in NAMES])]
    _mention(ann, first, start)
    cast = [first]
    if w.pick([" was", " and"], [0.4, 0.6]) == 1:
        others = [n for n in NAMES if n != first]
        at = w.here() + 1
        second = others[w.uniform([" " + n for n in others])]
        _mention(ann, second, at)
        cast.append(second)
        w.emit(" were")
    place = PLACES[w.uniform([(" at the " if p in AT_PLACES else " in the ") + p for p in PLACES])]
    w.emit(".")
    ann["place"] = place
    sentence(start, "opening", None, False)

    # Each character's first feeling is named: "Ann felt happy."
    for name in cast:
        start = w.here() + 1
        w.emit(" " + name)
        _mention(ann, name, start)
        w.emit(" felt")
        feeling[name] = w.uniform([" " + e for e in EMOTIONS])
        w.emit(".")
        sentence(start, "feeling", name, True)

    # Body: sentences about a character until the document stops.
    for i in range(MAX_BODY + 1):
        p_stop = 1.0 if i == MAX_BODY else P_STOP_NARRATIVE
        options = [END] + [" " + n for n in cast]
        probs = [p_stop] + [(1 - p_stop) / len(cast)] * len(cast)
        start = w.here() + 1
        j = w.pick(options, probs)
        if j == 0:
            break
        name = cast[j - 1]
        _mention(ann, name, start)
        angle = 30 * feeling[name]
        # The predicate: its first word says which kind of sentence this is.
        b = _circular_weights(angle, [phi for _, phi in BEHAVIOURS])
        o = _axis_weights(math.cos(math.radians(angle)), [s for _, s in OBJECT_VERBS])
        chunks = [" felt", " said,"] + [" " + v for v, _ in BEHAVIOURS] + [" " + v + " the" for v, _ in OBJECT_VERBS]
        probs = [0.15, 0.15] + [0.45 * x / sum(b) for x in b] + [0.25 * x / sum(o) for x in o]
        k = w.pick(chunks, probs)
        if k == 0:  # drift: stay, or move one step round the circle
            e = feeling[name]
            drift = [0.0] * 12
            drift[e] += 0.5
            drift[(e + 1) % 12] += 0.25
            drift[(e - 1) % 12] += 0.25
            feeling[name] = w.pick([" " + x for x in EMOTIONS], drift)
            w.emit(".")
            sentence(start, "feeling", name, True)
        elif k == 1:  # speech: an interjection, ended as the feeling dictates
            iw = _circular_weights(angle, [phi for _, phi in INTERJECTIONS])
            w.pick([f' "{x}' for x, _ in INTERJECTIONS], iw)
            ending(angle)
            w.emit('"')
            sentence(start, "speech", name, False)
        elif k < 2 + len(BEHAVIOURS):  # behaviour, then a manner that depends on the angle
            manner(angle)
            ending(angle)
            sentence(start, "behaviour", name, False)
        else:  # something done to an object (which leans on the feeling), and how
            ow = _circular_weights(angle, [22.5 * i for i in range(len(OBJECTS))], OBJECT_SHARPNESS)
            w.pick([" " + x for x in OBJECTS], ow)
            manner(angle)
            ending(angle)
            sentence(start, "object", name, False)
    return ann


def _transfer(w: _Writer) -> dict:
    ann: dict[str, Any] = {"characters": {}, "transfers": []}
    for i in range(MAX_TRANSFERS + 1):
        openings = [" " + o for o, _ in TRANSFER_OPENINGS]
        if i == 0:
            j = w.uniform(openings)
        else:
            p_stop = 1.0 if i == MAX_TRANSFERS else P_STOP_TRANSFER
            j = w.pick([END] + openings, [p_stop] + [(1 - p_stop) / len(openings)] * len(openings))
            if j == 0:
                break
            j -= 1
        start = w.here() - len(TRANSFER_OPENINGS[j][0])
        at_a = w.here() + 1
        a = NAMES[w.uniform([" " + n for n in NAMES])]
        w.emit(" and")
        others = [n for n in NAMES if n != a]
        at_b = w.here() + 1
        b = others[w.uniform([" " + n for n in others])]
        w.emit(" " + TRANSFER_OPENINGS[j][1])
        place = PLACES[w.uniform([" " + p for p in PLACES])]
        w.uniform(TRANSFER_FILLERS)
        at_s = w.here() + 1
        s = (a, b)[w.uniform([" " + a, " " + b])]
        io = b if s == a else a
        verb = TRANSFER_VERBS[w.uniform([" " + v for v in TRANSFER_VERBS])]
        w.emit(" the")
        obj = OBJECTS[w.uniform([" " + x for x in OBJECTS])]
        w.emit(" to")
        prompt_end = w.here()
        w.emit(" " + io)
        w.emit(".")
        for name, at in ((a, at_a), (b, at_b), (s, at_s), (io, prompt_end + 1)):
            _mention(ann, name, at)
        ann["transfers"].append(
            {
                "span": [start, w.here()],
                "prompt_end": prompt_end,
                "answer": io,
                "distractor": s,
                "answer_span": [prompt_end + 1, prompt_end + 1 + len(io)],
                "template": j,
                "place": place,
                "object": obj,
                "verb": verb,
            }
        )
    first = ann["transfers"][0]
    ann["prompt_end"] = first["prompt_end"]
    ann["answer"] = first["answer"]
    ann["distractor"] = first["distractor"]
    return ann


def _items(w: _Writer, pool: Sequence[str], lo: int, hi: int, ann: dict | None) -> list[str]:
    """Write between ``lo`` and ``hi`` space-separated items (length uniform), then ".".

    No separator token between items: a repeated sequence can then be copied by plain
    induction (find the current token earlier, predict what followed it), whereas a comma
    after every item would make each comma ambiguous. The length is never chosen silently:
    after each item from the ``lo``-th on, "." (stop) competes with the next item, with a
    stop probability that makes the length uniform. Items are drawn with replacement,
    except that names (``ann`` given) are not repeated within one line.
    """
    items: list[str] = []
    while True:
        left = [x for x in pool if ann is None or x not in items]
        can_stop = len(items) >= lo
        p_stop = 1.0 / (hi - len(items) + 1) if can_stop else 0.0
        chunks = ["."] * can_stop + [" " + x for x in left]
        probs = [p_stop] * can_stop + [(1 - p_stop) / len(left)] * len(left)
        at = w.here() + 1
        j = w.pick(chunks, probs) - can_stop
        if j < 0:
            return items
        items.append(left[j])
        if ann is not None:
            _mention(ann, left[j], at)


def _song(w: _Writer) -> dict:
    """A song: distinct random words, sung twice in a row with nothing before, between or
    after the copies but the final ".": ``w1 … wn w1 … wn.``

    Nothing announces it, so the only way to continue the second copy is to find the
    current word earlier in the context and copy what followed it: plain induction, the
    same task as a repeated random-token sequence. Still one derivation: the words are
    distinct, so the repeat starts at the first recurrence of ``w1``, which competes with
    the next new word (and no other family starts with two song words).
    """
    ann: dict[str, Any] = {"characters": {}, "repeats": []}
    items: list[str] = []
    start = w.here() + 1
    while True:
        left = [x for x in SONG_WORDS if x not in items]
        can_stop = len(items) >= SONG_MIN
        p_stop = 1.0 / (SONG_MAX - len(items) + 1) if can_stop else 0.0
        chunks = ([" " + items[0]] if can_stop else []) + [" " + x for x in left]
        probs = ([p_stop] if can_stop else []) + [(1 - p_stop) / len(left)] * len(left)
        j = w.pick(chunks, probs) - can_stop
        if j < 0:
            break
        items.append(left[j])
    first_end = w.here() - len(items[0]) - 1
    rep_start = w.here() - len(items[0])
    w.emit("".join(" " + x for x in items[1:]))
    ann["repeats"].append(
        {
            "kind": "song",
            "items": len(items),
            "first": [start, first_end],
            "repeat": [rep_start, w.here()],
            "distance": rep_start - start,
            "fillers_between": 0,
        }
    )
    for copy_start in (start, rep_start):  # names in a song are mentions too
        offset = copy_start
        for x in items:
            if x in NAMES:
                _mention(ann, x, offset)
            offset += len(x) + 1
    w.emit(".")
    w.pick([END], [1.0])  # a song ends the document
    ann["kind"] = "song"
    return ann


def _repetition(w: _Writer) -> dict:
    ann: dict[str, Any] = {"characters": {}, "repeats": []}
    w.emit(" Today")
    # The next words say which kind of sequence this is: a name (a list of things),
    # " the children lined up:" (a line of names) or " we learned a rhyme:".
    options = [" " + n for n in NAMES] + [" the children lined up:", " we learned a rhyme:"]
    probs = [0.4 / len(NAMES)] * len(NAMES) + [0.3, 0.3]
    at = w.here() + 1
    j = w.pick(options, probs)
    kind = "list" if j < len(NAMES) else ("line", "rhyme")[j - len(NAMES)]
    owner = NAMES[j] if kind == "list" else None
    if owner:
        _mention(ann, owner, at)
        w.emit(" made a list:")

    first_start = w.here() + 1
    if kind == "list":
        items = _items(w, LIST_ITEMS, 3, 10, None)
    elif kind == "line":
        items = _items(w, NAMES, 3, 8, ann)
    else:
        w.emit(" the")
        items = ["the"]
        for pool in (RHYME_ADJECTIVES, RHYME_NOUNS, RHYME_VERBS):
            items.append(pool[w.uniform([" " + x for x in pool])])
        w.emit(" on a")
        items += ["on", "a"]
        for pool in (RHYME_ADJECTIVES, RHYME_NOUNS):
            items.append(pool[w.uniform([" " + x for x in pool])])
    first_end = w.here() - (kind != "rhyme")  # the final "." is not part of the span
    if kind == "rhyme":
        w.emit(".")
    sep = " "
    body = " " + sep.join(items)
    again = {
        "list": f" {owner} read the list again:",
        "line": " The children lined up again:",
        "rhyme": " We said the rhyme again:",
    }[kind]

    repeats = fillers = 0
    while True:
        can_fill = fillers < MAX_FILLERS
        if repeats == 0:  # the sequence always recurs at least once
            p_end, p_fill, p_rep = 0.0, 0.5 * can_fill, 1.0 - 0.5 * can_fill
        else:
            p_end, p_fill, p_rep = 0.5, 0.3 * can_fill, 0.2 * (repeats < MAX_REPEATS)
        options = [END, again] + list(FILLERS)
        probs = [p_end, p_rep] + [p_fill / len(FILLERS)] * len(FILLERS)
        at = w.here() + 1
        j = w.pick(options, probs)
        if j == 0:
            break
        if j > 1:
            fillers += 1
            continue
        if owner:
            _mention(ann, owner, at)
        start = w.here() + 1
        w.emit(body)
        if kind == "line":
            offset = start
            for name in items:
                _mention(ann, name, offset)
                offset += len(name) + len(sep)
        ann["repeats"].append(
            {
                "kind": kind,
                "items": len(items),
                "first": [first_start, first_end],
                "repeat": [start, w.here()],
                "distance": start - first_start,
                "fillers_between": fillers,
            }
        )
        w.emit(".")
        repeats += 1
        fillers = 0
    ann["kind"] = kind
    return ann


_GENERATORS: dict[str, Callable[[_Writer], dict]] = {
    "narrative": _narrative,
    "transfer": _transfer,
    "repetition": _repetition,
    "song": _song,
}


# ---------------------------------------------------------------------------------------
# Public API


@dataclass
class Doc:
    """One Storyworld document.

    ``logprob`` is the exact natural-log probability of ``text`` (and of stopping after it)
    under the whole Storyworld mixture; ``logprob_in_family`` leaves out the choice of family.
    """

    text: str
    family: str
    annotations: dict
    logprob: float
    logprob_in_family: float
    seed: int | None = None
    index: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def _run(family: str, w: _Writer) -> dict:
    ann = _GENERATORS[family](w)
    if not w.ended:
        raise AssertionError(f"{family} generator returned without choosing to stop")
    if w.target is not None and w.pos != len(w.target):
        error = ParseError("", w.here(), [END], w.target[w.pos : w.pos + 12])
        error.args = (_describe(error),)
        raise error
    ann["characters"] = [{"name": n, "spans": spans} for n, spans in ann["characters"].items()]
    return ann


def sample(seed: int, index: int, family: str | None = None) -> Doc:
    """Document number ``index`` of the stream with this ``seed``.

    Each document has its own random stream, so document i is the same whatever else is
    sampled. With ``family`` given, the family is fixed instead of drawn (``logprob`` is
    still the probability under the full mixture).
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    rng = random.Random(f"storyworld/{seed}/{index}")  # str seeds hash with sha512: portable
    names = list(FAMILIES)
    u = rng.random()
    if family is None:
        acc = 0.0
        family = names[-1]
        for name in names:
            acc += FAMILIES[name]
            if u < acc:
                family = name
                break
    w = _Writer(rng=rng)
    ann = _run(family, w)
    lp_family = math.log(FAMILIES[family])
    return Doc(w.text(), family, ann, lp_family + w.logprob, w.logprob, seed, index)


def sample_docs(seed: int, n: int, family: str | None = None, start: int = 0) -> list[Doc]:
    """Documents ``start`` .. ``start + n - 1`` of the stream with this seed."""
    return [sample(seed, i, family) for i in range(start, start + n)]


def score(text: str, family: str | None = None) -> Doc:
    """Parse a document back into its unique derivation.

    Returns the same ``Doc`` that sampling produced (without seed and index). Raises
    ``ParseError`` if the text is not a Storyworld document. With ``family``, only that
    family's parse is tried (several times faster where the family is known: a text parses as
    at most one family, so the answer is the same whenever the text is of that family).
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    parses = []
    errors = []
    for name in [family] if family else FAMILIES:
        w = _Writer(text=text)
        try:
            ann = _run(name, w)
        except ParseError as e:
            errors.append(e)
            continue
        parses.append(Doc(text, name, ann, math.log(FAMILIES[name]) + w.logprob, w.logprob))
    if len(parses) > 1:
        raise ParseError(f"not exactly one derivation: {len(parses)} families parse it")
    if not parses:
        # Report where the text leaves the generator last: the family that read furthest.
        located = [e for e in errors if e.at is not None]
        if not located:
            raise ParseError("not a Storyworld document: " + "; ".join(str(e) for e in errors))
        at = max(e.at for e in located)
        furthest = [e for e in located if e.at == at]
        merged = ParseError("", at, [o for e in furthest for o in e.expected], furthest[0].found)
        raise ParseError(f"not a Storyworld document: {_describe(merged)}", at, merged.expected, merged.found)
    return parses[0]


# ---------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m utils.corpora.storyworld",
        description="Sample Storyworld documents as JSON lines, or re-score texts.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("sample", help="write N documents of seed S as JSON lines")
    sp.add_argument("--seed", type=int, required=True, help="stream seed (any integer)")
    sp.add_argument("--n", type=_positive, required=True, help="number of documents")
    sp.add_argument("--family", choices=sorted(FAMILIES), help="only this family")
    sp.add_argument("--start", type=_nonnegative, default=0, help="index of the first document")
    sc = sub.add_parser(
        "score",
        help="read JSON lines (or plain lines) of text from stdin, write each with its family, annotations and logprob",
    )
    sc.add_argument("--plain", action="store_true", help="input is one text per line")
    return ap


def _positive(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def _nonnegative(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, got {s!r}")
    return v


MAX_REPORTED = 10  # score names at most this many bad lines, then counts the rest
EXAMPLE_LINE = '{"text": "Ann was in the park."}'


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. A reader that goes away (``| head``) ends ``sample`` quietly with exit 141,
    Ctrl-C with 130; ``score`` names each line it cannot score on stderr, scores the others and exits 1."""
    args = _parser().parse_args(argv)
    if args.command == "sample":

        def command() -> int:
            for i in range(args.start, args.start + args.n):
                sys.stdout.write(sample(args.seed, i, args.family).to_json() + "\n")
            return 0

    else:

        def command() -> int:
            return _score_lines(cli.stdin_lines(), args.plain, sys.stdout, sys.stderr)

    return cli.run_quietly(command)


def _score_lines(lines, plain: bool, out, err) -> int:
    """Score every line (bytes or str); a bad line is named on ``err`` and the rest go on."""
    bad = 0
    for lineno, raw in enumerate(lines, 1):
        try:
            text = _line_text(raw, plain)
            if text is None:
                continue
            line = score(text).to_json() + "\n"
        except ParseError as e:
            problem = f"{e}; only texts that `python -m utils.corpora.storyworld sample` writes can be scored"
        except cli.BadLine as e:
            problem = str(e)
        else:
            out.write(line)
            continue
        bad += 1
        if bad <= MAX_REPORTED:
            print(f"line {lineno}: {problem}", file=err)
    if bad > MAX_REPORTED:
        print(f"{bad - MAX_REPORTED} more lines could not be scored ({bad} in all)", file=err)
    out.flush()
    return 1 if bad else 0


def _line_text(raw: bytes | str, plain: bool) -> str | None:
    """The text on one input line, ``None`` for a blank line."""
    line = cli.line_text(raw, EXAMPLE_LINE)
    if line is None or plain:
        return line
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise cli.BadLine(
            f"not JSON ({cli.json_problem(e)}); give one JSON object per line like "
            f"{EXAMPLE_LINE}, or pass --plain for one text per line"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        return obj["text"]
    if not isinstance(obj, dict):
        what = f"a JSON {_json_kind(obj)}, not an object"
    elif "text" not in obj:
        what = f'no "text" in {_short(line)}'
    else:
        what = f'"text" is a {_json_kind(obj["text"])}, not a string'
    raise cli.BadLine(f"{what}; give one JSON object per line like {EXAMPLE_LINE}")


def _json_kind(value) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _short(line: str, limit: int = 40) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


if __name__ == "__main__":
    sys.exit(main())
