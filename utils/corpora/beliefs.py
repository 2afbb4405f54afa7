"""Belief stories: a seeded generator of short stories in which every character's belief about
every container is known, with counterfactual twins for interchange interventions.

Two characters each fill a container with a drink; who can see whom decides who knows what;
a container may be filled again later, unseen; a question asks what one character believes
one container holds::

    Ann and Bob .
    Bob can see Ann .
    Ann fills the cup with tea .
    Bob fills the jar with milk .
    Bob cannot see Ann .
    Ann fills the cup with beer .
    Q Bob cup ? A tea

Bob watched Ann fill the cup with tea, looked away, and missed the beer: his belief (tea) is
false, the cup holds beer. The rules, in story order: nobody sees anybody until a sentence
``O can see X .`` says so (and ``O cannot see X .`` ends it); a fill is known to its actor and
to every character who can see the actor at that moment; a character believes a container
holds the drink of the last fill of it they performed or saw, and ``unknown`` when they saw
none. Questions are drawn over the characters and containers of the story, so they cover
true beliefs, false beliefs, beliefs learnt by watching and ``unknown`` (a kind is drawn
uniformly among those the story holds, then a question of that kind: see :func:`draw_plan`).

Each word is one token of the beliefs tokenizer (names, containers and drinks included), and
a story is fed to a model as ``[BOS] + tokens(text)``; the answer is the last word, to be
predicted at the ``A`` before it. Annotations are indices into ``words`` (no BOS: add 1 for a
model's input). Every choice is uniform among the ones the story structure allows, so
``logprob`` is exact, and :func:`score` recovers a story's choices from its text alone.

Models train on :func:`sample_training`: each story followed by every other question it could
ask, answered, in a drawn order (``Q Ann jar ? A milk Q ...``). The text up to the first
answer is the story itself, so what a model does at a lesson story's ``A`` is what it learnt to
do at a training story's first ``A``; the follow-ups give four answers to learn from per story
instead of one (a model of the zoo's size trained on single-question stories answered 35% of
held-out questions after 13M tokens, fewer than a reader who always says ``unknown``).

Command line::

    python -m utils.corpora.beliefs sample --seed 0 --n 5 [--more-characters]
    python -m utils.corpora.beliefs score < stories.jsonl
    python -m utils.corpora.beliefs tokenizer          # rebuild data/beliefs-tokenizer

Counterfactual twins (:func:`with_drink`, :func:`with_characters_swapped`,
:func:`with_visibility_flipped`) keep every word at its position, so a twin's activations
line up with the story's token by token.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from utils import paths
from utils.corpora import cli
from utils.corpora.storyworld import _nonnegative, _positive  # the same argument types as Storyworld's command line

NAMES = ("Ann", "Bob", "Cid", "Dan", "Eve", "Fay", "Gus", "Hal", "Ida", "Jon", "Kim", "Liv")
CONTAINERS = ("cup", "jar", "mug", "pot", "bowl", "jug", "box", "tin", "vase", "flask")
DRINKS = ("tea", "milk", "juice", "water", "soup", "wine", "beer", "cocoa", "coffee", "cider", "soda", "broth")
UNKNOWN = "unknown"
EOT = "<|endoftext|>"
WORDS = (".", "and", "fills", "the", "with", "can", "cannot", "see", "Q", "?", "A", UNKNOWN)
VOCAB = (EOT, *WORDS, *NAMES, *CONTAINERS, *DRINKS)
REBUILD_TOKENIZER = "python -m utils.corpora.beliefs tokenizer"

N_CHARACTERS = 2  # training stories; more_characters=True gives three (held out for generalisation)
SEE_BEFORE = 0.75  # chance of a visibility sentence before the fills
CAN = 0.75  # chance that it says "can" (a "cannot" there changes nothing: nobody sees anybody yet)
REFILL = 0.6  # chance of a second fill, by one character, of their own container
SEE_AFTER = 0.75  # chance of a visibility sentence just before a refill
FOLLOW = 0.75  # chance that the refill and the later sentence follow the first sentence (see draw_plan)
KINDS = ("own", "seen", "false", "unknown")


@dataclass(frozen=True)
class Plan:
    """A story's choices: everything else follows from them.

    ``characters[i]`` fills ``containers[i]`` with ``drinks[i]``, in that order. ``see_before``
    is a visibility sentence before the fills, ``(observer, actor, can)`` with character indices
    (``can`` False: the sentence says ``cannot``), or None; ``refill`` is ``(actor, drink)``, a
    second fill of the actor's own container after the first ones (or None), and ``see_after`` a
    visibility sentence just before it (only with a refill; or None). ``question`` is
    ``(character, container index)``. ``follow_up`` (training stories only, see
    :func:`draw_plan`): every other question of the story, asked and answered after it, in a
    drawn order; empty in the stories lessons and cards read.
    """

    characters: tuple[str, ...]
    containers: tuple[str, ...]
    drinks: tuple[str, ...]
    see_before: tuple[int, int, bool] | None
    refill: tuple[int, str] | None
    see_after: tuple[int, int, bool] | None
    question: tuple[int, int]
    follow_up: tuple[tuple[int, int], ...] = ()


def pairs(n: int) -> list[tuple[int, int]]:
    """Every ordered (observer, actor) pair of ``n`` characters."""
    return [(o, a) for o in range(n) for a in range(n) if o != a]


def all_questions(n: int) -> list[tuple[int, int]]:
    """Every ``(character, container)`` question a story of ``n`` characters can ask, in order."""
    return [(w, x) for w in range(n) for x in range(n)]


def visibility_sentence(plan: Plan, sentence: tuple[int, int, bool]) -> list[str]:
    o, a, can = sentence
    return [plan.characters[o], "can" if can else "cannot", "see", plan.characters[a], "."]


def story_words(plan: Plan) -> list[str]:
    """The story of a plan as words, the answer last (the follow-up questions' answers after it)."""
    c, k, d = plan.characters, plan.containers, plan.drinks
    words = [*" and ".join(c).split(), "."]
    if plan.see_before:
        words += visibility_sentence(plan, plan.see_before)
    for i in range(len(c)):
        words += [c[i], "fills", "the", k[i], "with", d[i], "."]
    if plan.refill:
        actor, drink = plan.refill
        if plan.see_after:
            words += visibility_sentence(plan, plan.see_after)
        words += [c[actor], "fills", "the", k[actor], "with", drink, "."]
    believed = beliefs_of(plan)
    for who, which in (plan.question, *plan.follow_up):
        words += ["Q", c[who], k[which], "?", "A", believed[c[who]][k[which]]]
    return words


def events(plan: Plan) -> list[tuple[int, str, frozenset[int]]]:
    """Every fill in story order: (actor, drink, the characters who know of it)."""
    n = len(plan.characters)
    visible: set[tuple[int, int]] = set()

    def say(sentence: tuple[int, int, bool] | None) -> None:
        if sentence is not None:
            o, a, can = sentence
            (visible.add if can else visible.discard)((o, a))

    say(plan.see_before)
    out = [(i, plan.drinks[i], frozenset({i} | {o for o, a in visible if a == i})) for i in range(n)]
    if plan.refill:
        say(plan.see_after)
        actor, drink = plan.refill
        out.append((actor, drink, frozenset({actor} | {o for o, a in visible if a == actor})))
    return out


def beliefs_of(plan: Plan) -> dict[str, dict[str, str]]:
    """What each character believes each container holds (``unknown`` where they saw no fill)."""
    beliefs = {who: dict.fromkeys(plan.containers, UNKNOWN) for who in plan.characters}
    for actor, drink, knowers in events(plan):
        for i in knowers:
            beliefs[plan.characters[i]][plan.containers[actor]] = drink
    return beliefs


def believed(plan: Plan, who: int, which: int) -> str:
    """What character ``who`` believes container ``which`` holds (indices in order of mention)."""
    return beliefs_of(plan)[plan.characters[who]][plan.containers[which]]


def answer_fill(plan: Plan) -> int | None:
    """The fill (story order, from 0) whose drink answers the question: the last fill of the asked
    container that the asked character knows of; None when the answer is ``unknown``. This is the
    causal model's pointer: the answer is that fill's drink, wherever it sits in the story."""
    who, which = plan.question
    known = [i for i, (actor, _, knowers) in enumerate(events(plan)) if actor == which and who in knowers]
    return known[-1] if known else None


def reality_of(plan: Plan) -> dict[str, str]:
    """What each container holds at the end."""
    held = {}
    for actor, drink, _ in events(plan):
        held[plan.containers[actor]] = drink
    return held


def question_kind(plan: Plan) -> str:
    """``own`` (the asker filled it last or only), ``seen`` (saw its last fill), ``false``
    (believes an older drink than it holds), ``unknown`` (saw no fill of it)."""
    who, which = plan.question
    container = plan.containers[which]
    belief = beliefs_of(plan)[plan.characters[who]][container]
    if belief == UNKNOWN:
        return "unknown"
    if belief != reality_of(plan)[container]:
        return "false"
    last_actor = [a for a, _, _ in events(plan) if a == which][-1]
    return "own" if last_actor == who else "seen"


def questions_by_kind(plan: Plan) -> dict[str, list[tuple[int, int]]]:
    """Every question the story could ask, grouped by its kind (only the kinds present)."""
    n, out = len(plan.characters), {}
    for question in all_questions(n):
        out.setdefault(question_kind(replace(plan, question=question)), []).append(question)
    return out


def plan_logprob(plan: Plan) -> float:
    """Exact natural-log probability of drawing this plan with :func:`draw_plan`."""
    n, m = len(plan.characters), len(pairs(len(plan.characters)))
    lp = -sum(math.log(len(NAMES) - i) + math.log(len(CONTAINERS) - i) + math.log(len(DRINKS)) for i in range(n))
    before = plan.see_before
    if before is None:
        lp += math.log(1 - SEE_BEFORE)
    else:
        lp += math.log(SEE_BEFORE / m) + math.log(CAN if before[2] else 1 - CAN)
    if plan.refill is None:
        return lp + math.log(1 - REFILL) + _question_logprob(plan)
    actor, _ = plan.refill
    follows = before is not None and before[2]
    p_actor = (FOLLOW * (actor == before[1]) + (1 - FOLLOW) / n) if follows else 1 / n
    lp += math.log(REFILL * p_actor / (len(DRINKS) - 1))
    after = plan.see_after
    if after is None:
        lp += math.log(1 - SEE_AFTER)
    else:
        echo = before is not None and after == (before[0], before[1], not before[2])
        p_after = (FOLLOW * echo + (1 - FOLLOW) / (2 * m)) if before is not None else 1 / (2 * m)
        lp += math.log(SEE_AFTER * p_after)
    return lp + _question_logprob(plan)


def _question_logprob(plan: Plan) -> float:
    kinds = questions_by_kind(plan)
    lp = -math.log(len(kinds)) - math.log(len(kinds[question_kind(plan)]))
    if plan.follow_up:  # every other question, in one of (n² - 1)! orders
        lp -= math.lgamma(len(plan.characters) ** 2)
    return lp


def draw_plan(rng: random.Random, more_characters: bool = False, follow_up: bool = False) -> Plan:
    """A plan. Names, containers and drinks are uniform; a visibility sentence comes before the
    fills with chance ``SEE_BEFORE`` (a pair of characters uniform, ``can`` with chance ``CAN``);
    a refill with chance ``REFILL``, by the watched character with chance ``FOLLOW`` when the
    first sentence says ``can`` (else by anyone), and before it a visibility sentence with chance
    ``SEE_AFTER``, with chance ``FOLLOW`` the first one's pair saying the opposite (else any pair,
    either word), so that false beliefs are common. The question: a kind uniform among the kinds
    the story holds, then a question of that kind uniformly. With ``follow_up`` (the training
    stream), every other question of the story follows, in a uniformly drawn order: four
    answers to learn from per two-character story instead of one, while the text up to the first
    answer is the story without follow-ups."""
    n = N_CHARACTERS + int(more_characters)
    characters = tuple(rng.sample(NAMES, n))
    containers = tuple(rng.sample(CONTAINERS, n))
    drinks = tuple(rng.choice(DRINKS) for _ in range(n))
    before = refill = after = None
    if rng.random() < SEE_BEFORE:
        before = (*rng.choice(pairs(n)), rng.random() < CAN)
    if rng.random() < REFILL:
        follows = before is not None and before[2] and rng.random() < FOLLOW
        actor = before[1] if follows else rng.randrange(n)
        refill = (actor, rng.choice([x for x in DRINKS if x != drinks[actor]]))
        if rng.random() < SEE_AFTER:
            if before is not None and rng.random() < FOLLOW:
                after = (before[0], before[1], not before[2])
            else:
                after = (*rng.choice(pairs(n)), rng.random() < 0.5)
    plan = Plan(characters, containers, drinks, before, refill, after, (0, 0))
    kinds = questions_by_kind(plan)
    kind = rng.choice(sorted(kinds, key=KINDS.index))
    question = rng.choice(kinds[kind])
    if not follow_up:
        return replace(plan, question=question)
    others = [q for q in all_questions(n) if q != question]
    return replace(plan, question=question, follow_up=tuple(rng.sample(others, len(others))))


@dataclass
class Story:
    """One belief story: its text, its plan, what everyone believes, annotations, exact logprob."""

    text: str
    plan: Plan
    beliefs: dict
    reality: dict
    kind: str
    annotations: dict
    logprob: float
    seed: int | None = None
    index: int | None = None

    @property
    def words(self) -> list[str]:
        return self.text.split(" ")

    @property
    def answer(self) -> str:
        """The answer to the story's question (the last word, unless follow-up questions come after it)."""
        return self.words[self.annotations["question"]["answer_at"] + 1]

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def annotate(words: Sequence[str], plan: Plan) -> dict:
    """Token indices (into ``words``, no BOS) of what the story mentions.

    ``characters``: each character's name in the opening line; ``fills``: for each fill in
    story order its ``actor``, ``container``, ``drink`` and closing ``end`` (the ``.``);
    ``visibility``: each visibility sentence's ``observer``, ``verb`` (``can``/``cannot``) and
    ``actor``; ``question``: the asked ``character`` and ``container``, and ``answer_at``, the
    ``A`` at which the model predicts the answer (the last word is the answer itself);
    ``follow_up``: the same for each follow-up question (training stories only).
    """
    n = len(plan.characters)
    characters = [2 * i for i in range(n)]
    fills, visibility, i = [], [], 2 * n
    while words[i] != "Q":
        if words[i + 1] == "fills":
            fills.append({"actor": i, "container": i + 3, "drink": i + 5, "end": i + 6})
            i += 7
        else:
            visibility.append({"observer": i, "verb": i + 1, "actor": i + 3})
            i += 5
    asked = [{"character": j + 1, "container": j + 2, "answer_at": j + 4} for j in range(i, len(words), 6)]
    out = {"characters": characters, "fills": fills, "visibility": visibility, "question": asked[0]}
    if plan.follow_up:
        out["follow_up"] = asked[1:]
    return out


def make_story(plan: Plan, seed: int | None = None, index: int | None = None) -> Story:
    """The story of a plan, with its beliefs, annotations and exact log-probability."""
    _check_plan(plan)
    words = story_words(plan)
    return Story(
        " ".join(words),
        plan,
        beliefs_of(plan),
        reality_of(plan),
        question_kind(plan),
        annotate(words, plan),
        plan_logprob(plan),
        seed,
        index,
    )


def _check_plan(plan: Plan) -> None:
    n = len(plan.characters)
    if not N_CHARACTERS <= n <= N_CHARACTERS + 1 or len(plan.containers) != n or len(plan.drinks) != n:
        raise ValueError(
            f"a story has {N_CHARACTERS} or {N_CHARACTERS + 1} characters, each with a container and a drink"
        )
    if len(set(plan.characters)) != n or len(set(plan.containers)) != n:
        raise ValueError("the characters and the containers of a story are all different")
    words = set(plan.characters) | set(plan.containers) | set(plan.drinks)
    if not words <= set(NAMES) | set(CONTAINERS) | set(DRINKS):
        raise ValueError(f"unknown words in the plan: {sorted(words - set(VOCAB))}")
    for sentence in (plan.see_before, plan.see_after):
        if sentence is not None and (len(sentence) != 3 or tuple(sentence[:2]) not in pairs(n)):
            raise ValueError(f"a visibility sentence is two different characters of the story and can, not {sentence}")
    if plan.see_after is not None and plan.refill is None:
        raise ValueError("a visibility change after the fills comes only before a refill")
    if plan.refill is not None and (not 0 <= plan.refill[0] < n or plan.refill[1] == plan.drinks[plan.refill[0]]):
        raise ValueError("a refill is by a character of the story, with a drink other than the one in the container")
    if not all(0 <= q < n for q in plan.question):
        raise ValueError(f"the question asks about a character and a container of the story, not {plan.question}")
    others = set(all_questions(n)) - {tuple(plan.question)}
    if plan.follow_up and (len(plan.follow_up) != len(others) or set(map(tuple, plan.follow_up)) != others):
        raise ValueError("the follow-up questions are every other question of the story, each once")


def sample(seed: int, index: int, more_characters: bool = False, follow_up: bool = False) -> Story:
    """Story number ``index`` of the stream with this ``seed`` (its own random stream); with
    ``follow_up``, the same story followed by every other question (see :func:`draw_plan`)."""
    rng = random.Random(f"beliefs/{seed}/{index}/{int(more_characters)}")  # str seeds hash with sha512
    return make_story(draw_plan(rng, more_characters, follow_up), seed, index)


def sample_stories(
    seed: int, n: int, start: int = 0, more_characters: bool = False, follow_up: bool = False
) -> list[Story]:
    """Stories ``start`` .. ``start + n - 1`` of the stream with this seed."""
    return [sample(seed, i, more_characters, follow_up) for i in range(start, start + n)]


def sample_training(seed: int, n: int, start: int = 0) -> list[Story]:
    """The training stream: two-character stories, each with its follow-up questions."""
    return sample_stories(seed, n, start, follow_up=True)


class ParseError(ValueError):
    """A text that is not a belief story; the message says where it goes wrong."""


def score(text: str) -> Story:
    """Recover a story's plan from its text, and check that the text is that plan's story."""
    words = text.split(" ")
    try:
        end = words.index(".")
        characters = tuple(words[0:end:2])
        n = len(characters)
        fills, see, i = [], [], end + 1
        while words[i] != "Q":
            if words[i + 1] == "fills":
                fills.append((characters.index(words[i]), words[i + 3], words[i + 5]))
                i += 7
            else:
                if words[i + 1] not in ("can", "cannot") or words[i + 2] != "see":
                    raise ValueError(words[i + 1])
                see.append(
                    (characters.index(words[i]), characters.index(words[i + 3]), words[i + 1] == "can", len(fills))
                )
                i += 5
        containers = tuple(k for _, k, _ in fills[:n])
        drinks = tuple(d for _, _, d in fills[:n])
        see_before = next(((o, a, can) for o, a, can, at in see if at == 0), None)
        see_after = next(((o, a, can) for o, a, can, at in see if at == n), None)
        refill = (fills[n][0], fills[n][2]) if len(fills) > n else None
        asked = [(characters.index(words[j + 1]), containers.index(words[j + 2])) for j in range(i, len(words), 6)]
        plan = Plan(characters, containers, drinks, see_before, refill, see_after, asked[0], tuple(asked[1:]))
        story = make_story(plan)
    except (ValueError, IndexError):
        raise ParseError(
            "not a belief story: it opens with the characters ('Ann and Bob .'), fills each container "
            "('Ann fills the cup with tea .'), may say who can see whom, and ends with a question "
            "('Q Bob cup ? A tea')"
        ) from None
    if story.text != text:
        raise ParseError(f"not the story its choices make: expected {story.text!r}")
    return story


# ---------------------------------------------------------------------------------------
# Counterfactual twins: the same positions, one variable changed


def with_drink(story: Story, fill: int, drink: str) -> Story:
    """The story with fill number ``fill`` (story order) pouring ``drink`` instead."""
    plan = story.plan
    n = len(plan.characters)
    if fill < n:
        drinks = tuple(drink if i == fill else d for i, d in enumerate(plan.drinks))
        twin = replace(plan, drinks=drinks)
    elif plan.refill and fill == n:
        twin = replace(plan, refill=(plan.refill[0], drink))
    else:
        raise ValueError(f"the story has {n + bool(plan.refill)} fills, numbered from 0; not {fill}")
    return make_story(twin, story.seed, story.index)


def with_characters_swapped(story: Story) -> Story:
    """The story with its first two characters' names exchanged everywhere: the same events,
    told of the other character (the order in which the names appear changes)."""
    plan = story.plan
    names = list(plan.characters)
    names[0], names[1] = names[1], names[0]
    return make_story(replace(plan, characters=tuple(names)), story.seed, story.index)


def with_visibility_flipped(story: Story, sentence: int = 0) -> Story:
    """The story with visibility sentence number ``sentence`` (story order) saying the opposite,
    ``cannot`` for ``can`` or back: one word changed, every belief recomputed."""
    plan = story.plan
    said = [name for name in ("see_before", "see_after") if getattr(plan, name) is not None]
    if not 0 <= sentence < len(said):
        raise ValueError(f"the story has {len(said)} visibility sentences, numbered from 0; not {sentence}")
    o, a, can = getattr(plan, said[sentence])
    return make_story(replace(plan, **{said[sentence]: (o, a, not can)}), story.seed, story.index)


def with_question(story: Story, question: tuple[int, int]) -> Story:
    """The same story asking another question, ``(character, container)`` indices: only the two
    question words change."""
    return make_story(replace(story.plan, question=tuple(question)), story.seed, story.index)


def with_new_cast(story: Story, rng: random.Random) -> Story:
    """A story of the same shape (the same sentences in the same places, the same question by
    index) told with other names, containers and drinks, drawn from ``rng`` so that no name,
    container or drink of the story's fills comes back (a refill's drink differs from the one it
    replaces)."""
    plan = story.plan
    n = len(plan.characters)
    used = set(plan.characters) | set(plan.containers) | set(plan.drinks)
    if plan.refill:
        used.add(plan.refill[1])
    characters = tuple(rng.sample([x for x in NAMES if x not in used], n))
    containers = tuple(rng.sample([x for x in CONTAINERS if x not in used], n))
    fresh = [x for x in DRINKS if x not in used]
    drinks = tuple(rng.sample(fresh, n + 1))
    refill = (plan.refill[0], drinks[n]) if plan.refill else None
    twin = replace(plan, characters=characters, containers=containers, drinks=drinks[:n], refill=refill)
    return make_story(twin, story.seed, story.index)


def pointer_twin(story: Story, rng: random.Random) -> Story | None:
    """A source story for moving the causal model's pointer: the story's shape told with a new cast
    (:func:`with_new_cast`), asking a question whose answer is a known fill other than the
    story's own answer fill. None when the story's answer is ``unknown`` or no question fits.
    The questions are tried in an order drawn from ``rng``."""
    own = answer_fill(story.plan)
    if own is None:
        return None
    cast = with_new_cast(story, rng)
    for question in rng.sample(all_questions(len(story.plan.characters)), len(story.plan.characters) ** 2):
        twin = with_question(cast, question)
        fill = answer_fill(twin.plan)
        if fill is not None and fill != own:
            return twin
    return None


def order_twin(story: Story, rng: random.Random, change: str = "container") -> Story | None:
    """A source for moving the question's ordering IDs: the story's shape told with a new cast
    (:func:`with_new_cast`), asking about another character (``change="character"``), another
    container (``"container"``) or both (``"both"``), by index, drawn from ``rng``. None when the
    story itself asked that question would keep its answer (the move could not be seen)."""
    if change not in ("character", "container", "both"):
        raise ValueError(f"change is 'character', 'container' or 'both', not {change!r}")
    n = len(story.plan.characters)
    who, which = story.plan.question
    if change in ("character", "both"):
        who = rng.choice([i for i in range(n) if i != who])
    if change in ("container", "both"):
        which = rng.choice([i for i in range(n) if i != which])
    if with_question(story, (who, which)).answer == story.answer:
        return None
    return with_question(with_new_cast(story, rng), (who, which))


def by_recency(plan: Plan) -> list[int]:
    """The containers (indices, each the container of the character with that index) from the one
    filled most recently to the one filled longest ago: the refilled container first, then the
    others in reverse order of their first fill."""
    n = len(plan.characters)
    last = {i: i for i in range(n)}  # the story-order number of each container's last fill
    if plan.refill:
        last[plan.refill[0]] = n
    return sorted(range(n), key=lambda i: -last[i])


def with_refill_by(story: Story, actor: int) -> Story:
    """The story with its refill done by character ``actor`` (of their own container) instead, in
    the same place with the same drink, every other sentence as it was: every word stays where it
    was and the order of first mention is the same, while which container was filled most recently
    (:func:`by_recency`) follows ``actor``. ``ValueError`` when the story has no refill, or when the
    drink is already in ``actor``'s container."""
    plan = story.plan
    if plan.refill is None:
        raise ValueError("the story has no refill to give to another character")
    if not 0 <= actor < len(plan.characters):
        raise ValueError(f"the story has {len(plan.characters)} characters, numbered from 0; not {actor}")
    return make_story(replace(plan, refill=(actor, plan.refill[1])), story.seed, story.index)


def question_twin(story: Story, rng: random.Random) -> Story | None:
    """The same story asking another question whose answer differs (:func:`with_question`); None when
    every question has the story's answer. The questions are tried in an order drawn from ``rng``."""
    n = len(story.plan.characters)
    for question in rng.sample(all_questions(n), n * n):
        twin = with_question(story, question)
        if twin.answer != story.answer:
            return twin
    return None


# ---------------------------------------------------------------------------------------
# Tokenizer: one token per word


def build_tokenizer(out_dir: Path | None = None) -> Path:
    """Write the beliefs tokenizer (the fixed word-level vocabulary :data:`VOCAB`) as HF tokenizer files."""
    from tokenizers import pre_tokenizers

    from utils.corpora.tokenizer import save_word_level

    return save_word_level(VOCAB, pre_tokenizers.WhitespaceSplit(), 256, out_dir or paths.BELIEFS_TOKENIZER_DIR)


def load_tokenizer(path: str | Path | None = None):
    """The beliefs tokenizer from ``data/beliefs-tokenizer`` (offline)."""
    from utils.corpora.tokenizer import load_tokenizer as load

    return load(path or paths.BELIEFS_TOKENIZER_DIR, rebuild=REBUILD_TOKENIZER)


def encode(text: str, tokenizer=None) -> list[int]:
    """``[BOS] + tokens(text)``: what a model reads."""
    tokenizer = tokenizer or load_tokenizer()
    return [0] + tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------
# Command line


EXAMPLE_LINE = json.dumps(
    {"text": "Ann and Bob . Ann fills the cup with tea . Bob fills the jar with milk . Q Bob cup ? A unknown"}
)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. A reader that goes away (``| head``) ends ``sample`` quietly with exit 141,
    Ctrl-C with 130; ``score`` names each line it cannot score on stderr, scores the others and exits 1."""
    ap = argparse.ArgumentParser(
        prog="python -m utils.corpora.beliefs",
        description="Sample belief stories as JSON lines, re-score texts, or rebuild the beliefs tokenizer.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("sample", help="write N stories of seed S as JSON lines")
    sp.add_argument("--seed", type=int, required=True, help="stream seed (any integer)")
    sp.add_argument("--n", type=_positive, required=True, help="number of stories")
    sp.add_argument("--start", type=_nonnegative, default=0, help="index of the first story")
    sp.add_argument("--more-characters", action="store_true", help="three characters (held out from training)")
    sub.add_parser("score", help='read JSON lines {"text": ...} from stdin, write each story with its beliefs')
    sub.add_parser("tokenizer", help=f"rebuild {paths.shown(paths.BELIEFS_TOKENIZER_DIR)} (the same file every time)")
    args = ap.parse_args(argv)
    if args.command == "tokenizer":
        print(f"wrote {paths.shown(build_tokenizer())} ({len(VOCAB)} tokens)", file=sys.stderr)
        return 0
    if args.command == "sample":

        def command() -> int:
            for i in range(args.start, args.start + args.n):
                sys.stdout.write(sample(args.seed, i, args.more_characters).to_json() + "\n")
            return 0

    else:

        def command() -> int:
            return _score_lines(cli.stdin_lines(), sys.stdout, sys.stderr)

    return cli.run_quietly(command)


def _score_lines(lines, out, err) -> int:
    """Score every line (bytes or str); a bad line is named on ``err`` and the rest go on."""
    bad = 0
    for lineno, raw in enumerate(lines, 1):
        try:
            line = cli.line_text(raw, EXAMPLE_LINE)
            if line is None:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ParseError(
                    f"not JSON ({cli.json_problem(e)}); give one JSON object per line like {EXAMPLE_LINE}"
                ) from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ParseError(f'give one JSON object per line with a "text" string, like {EXAMPLE_LINE}')
            out.write(score(obj["text"]).to_json() + "\n")
        except (ParseError, cli.BadLine) as e:
            bad += 1
            print(f"line {lineno}: {e}", file=err)
    out.flush()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
