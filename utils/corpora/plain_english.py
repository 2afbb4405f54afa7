"""Plain English written for the course: sentences, passages that repeat one of them, and whole paragraphs.

Storyworld's words are the zoo's whole world: its tokenizer spells "river" in four pieces. A
model trained on the web reads ordinary English, so a question the zoo cannot be asked can be
asked of it: does something learned on Storyworld (a latent, a direction) mean the same thing
in text Storyworld never had? :func:`repeated_passages` builds the test: three different
sentences, then the second again, so that the two copies of that sentence have the same
tokens and differ in whether the text has been seen before, and in position: the second copy
always comes later, so a detector of "later in the text" separates them too.
:func:`new_ending_passages` is the control for that: the same A B C with a fourth sentence D in
the second copy's place, so that D stands where the copy stood and has never been read.
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

# Whole paragraphs of ordinary prose, each on its own subject: what a model trained on the web should read far
# better than Storyworld's stories and than the same words shuffled (lesson 00's check of the converted model).
PARAGRAPHS = (
    "Bread is one of the oldest foods made by people. It is usually made from flour, water, salt and yeast. The "
    "yeast feeds on the sugars in the flour and gives off gas, which makes the dough rise. After the dough has risen, "
    "it is shaped and baked in a hot oven until the crust turns brown. There are many kinds of bread around the world, "
    "from flat breads cooked on a hot stone to soft white loaves sold in shops. In many countries bread is eaten with "
    "almost every meal.",
    "Most rivers begin as small streams high in the hills, where rain and melting snow run down the slopes. As they "
    "flow downhill, the streams join together and the water grows deeper and wider. Along the way a river carries "
    "sand and small stones, which it drops where the water slows down. Near the sea the land is often flat, and the "
    "river may split into many channels before it reaches the coast. Towns were often built beside rivers, because "
    "the water was useful for drinking, farming and travel.",
    "A library is a place where people can borrow books for free. Most libraries also lend films and music, and many "
    "of them have computers that anyone can use. The books are arranged on the shelves by subject, so that books "
    "about the same topic stand next to each other. If you cannot find what you are looking for, a librarian will "
    "help you search the catalogue. Many libraries also hold reading groups for children and talks by local writers "
    "in the evenings.",
    "Growing vegetables at home takes some planning. First, choose a spot that gets at least six hours of sunlight a "
    "day, since most plants need plenty of light. Then prepare the soil by removing weeds and mixing in compost. "
    "Seeds should be planted at the depth written on the packet and watered gently every few days. As the plants "
    "grow, keep an eye out for insects and pull up any new weeds before they spread. With a little care, a small "
    "garden can provide fresh food for much of the summer.",
    "Trains have carried people and goods for almost two hundred years. The first railways used steam engines, which "
    "burned coal to boil water and push the wheels. Later, diesel and electric engines replaced steam on most lines "
    "because they were cleaner and easier to run. Today some fast trains travel at more than three hundred "
    "kilometres an hour, linking cities that once took a full day to reach. Many people prefer the train to flying "
    "for shorter trips, since stations are often close to the city centre.",
)


@dataclass(frozen=True)
class RepeatedPassage:
    """``text`` = sentences A, B, C and a fourth: B again, or a new sentence D. ``first`` is B's span
    and ``second`` the fourth sentence's, as ``(start, end)`` character offsets (without the space
    before them)."""

    text: str
    first: tuple[int, int]
    second: tuple[int, int]


def _draws(seed: int, n: int, k: int) -> list[list[str]]:
    """``n`` draws of ``k`` different sentences; the first three of each draw do not depend on ``k``."""
    g = torch.Generator().manual_seed(seed)
    return [[SENTENCES[i] for i in torch.randperm(len(SENTENCES), generator=g)[:k].tolist()] for _ in range(n)]


def _passage(a: str, b: str, c: str, last: str) -> RepeatedPassage:
    start = len(a) + 1
    again = start + len(b) + 1 + len(c) + 1
    return RepeatedPassage(f"{a} {b} {c} {last}", (start, start + len(b)), (again, again + len(last)))


def repeated_passages(seed: int, n: int) -> list[RepeatedPassage]:
    """``n`` passages "A B C B", each of three different sentences drawn with ``seed``."""
    return [_passage(a, b, c, b) for a, b, c in _draws(seed, n, 3)]


def new_ending_passages(seed: int, n: int) -> list[RepeatedPassage]:
    """The same ``n`` passages as :func:`repeated_passages` with B's second copy replaced by a fourth
    sentence D: "A B C D". ``first`` is B's span, ``second`` D's."""
    return [_passage(a, b, c, d) for a, b, c, d in _draws(seed, n, 4)]


def _tokens_inside(text: str, offsets: list[tuple[int, int]], span: tuple[int, int]) -> list[int]:
    # a token's leading space belongs to the gap before the word
    return [i for i, (a, b) in enumerate(offsets) if a + (text[a] == " ") >= span[0] and b <= span[1]]


def span_tokens(tokenizer, passage: RepeatedPassage) -> tuple[list[int], list[int], list[int]]:
    """The passage's token ids (no start token) and the positions of the tokens of its ``first``
    and its ``second`` span."""
    enc = tokenizer(passage.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    return (
        ids,
        _tokens_inside(passage.text, offsets, passage.first),
        _tokens_inside(passage.text, offsets, passage.second),
    )


def copy_tokens(tokenizer, passage: RepeatedPassage) -> tuple[list[int], list[int], list[int]]:
    """As :func:`span_tokens`, for a repeated passage: B's tokens in its first and second copy, in the
    same order (the copies' tokens are checked to be the same)."""
    ids, first, second = span_tokens(tokenizer, passage)
    if [ids[i] for i in first] != [ids[i] for i in second]:
        raise ValueError(f"the two copies are tokenized differently in {passage.text!r}")
    return ids, first, second
