"""Plain English sentences written for the course, and passages that repeat one of them.

Storyworld's words are the zoo's whole world: its tokenizer spells "river" in four pieces. A
model trained on the web reads ordinary English, so a question the zoo cannot be asked can be
asked of it: does something learned on Storyworld (a latent, a direction) mean the same thing
in text Storyworld never had? :func:`repeated_passages` builds the test: three different
sentences, then the second again, so that the two copies of that sentence have the same
tokens and differ in whether the text has been seen before, and in position: the second copy
always comes later, so a detector of "later in the text" separates them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SENTENCES = (
    "Bread is one of the oldest foods made by people.",
    "The river was wide and slow where it passed the old mill.",
    "Most birds build their nests in the spring, when food is easy to find.",
    "A good map shows roads, rivers and the height of the land.",
    "The library opens at nine in the morning and closes at six.",
    "Copper is a soft metal that carries heat and electricity well.",
    "In winter the lake freezes hard enough for people to walk on it.",
    "The train to the coast leaves from the second platform every hour.",
    "Tomatoes grow best in warm weather with plenty of water and sun.",
    "She wrote the letter slowly, choosing each word with care.",
    "The museum has a large collection of clocks from many countries.",
    "Wind turns the blades, and the blades turn a machine that makes power.",
    "He painted the fence white and left the gate open to dry.",
    "A year on Mars lasts almost twice as long as a year on Earth.",
    "The market sells fresh fish early each morning before the heat comes.",
    "Children learn to read more easily when someone reads to them at home.",
    "The bridge was closed for a week while workers fixed the road.",
    "Honey keeps for a very long time if the jar is kept closed.",
    "The old house at the end of the street has a green door.",
    "Clouds form when warm air rises and cools high above the ground.",
    "The doctor asked him to rest for three days and drink more water.",
    "Our team won the first game but lost the next two.",
    "A cat will often sleep for most of the day in a warm place.",
    "The farmer checked the fence before letting the sheep into the field.",
)


@dataclass(frozen=True)
class RepeatedPassage:
    """``text`` = sentences A, B, C and B again; ``first`` and ``second`` are B's two copies as
    ``(start, end)`` character offsets (without the space before them)."""

    text: str
    first: tuple[int, int]
    second: tuple[int, int]


def repeated_passages(seed: int, n: int) -> list[RepeatedPassage]:
    """``n`` passages "A B C B", each of three different sentences drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a, b, c = (SENTENCES[i] for i in torch.randperm(len(SENTENCES), generator=g)[:3].tolist())
        start = len(a) + 1
        again = start + len(b) + 1 + len(c) + 1
        out.append(RepeatedPassage(f"{a} {b} {c} {b}", (start, start + len(b)), (again, again + len(b))))
    return out


def copy_tokens(tokenizer, passage: RepeatedPassage) -> tuple[list[int], list[int], list[int]]:
    """The passage's token ids (no start token) and the positions of B's tokens in its first and
    second copy, in the same order (the copies' tokens are checked to be the same)."""
    enc = tokenizer(passage.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def inside(span: tuple[int, int]) -> list[int]:
        # a token's leading space belongs to the gap before the word
        return [i for i, (a, b) in enumerate(offsets) if a + (passage.text[a] == " ") >= span[0] and b <= span[1]]

    first, second = inside(passage.first), inside(passage.second)
    if [ids[i] for i in first] != [ids[i] for i in second]:
        raise ValueError(f"the two copies are tokenized differently in {passage.text!r}")
    return ids, first, second
