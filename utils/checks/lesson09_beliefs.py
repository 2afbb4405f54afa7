"""Checks for lesson 09, how a model tracks who believes what: ``check_<exercise>(your_function)``.

Each check runs the learner's function on fresh belief stories (two and three characters) or on
random activations whose answer is known, and compares it with the generator's ground truth or
the reference in ``utils.metrics.beliefs``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import torch

from utils import seeds
from utils.checks.framework import CheckFailed, call, expect_close, expect_tensor, passed
from utils.corpora import beliefs
from utils.metrics import beliefs as ref

CHECK_SEED = seeds.LESSON_09_CHECKS  # the checks' own stories, apart from every lesson sample


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


# --- the causal model as code -------------------------------------------------------------------


def _wrong_answers(story: beliefs.Story) -> dict[str, str]:
    """What the likely misreadings of the rules answer for one story."""
    plan = story.plan
    who, which = plan.question
    known = [drink for actor, drink, knowers in beliefs.events(plan) if actor == which and who in knowers]
    # a reader for whom "cannot" never ends a "can": the story without its "cannot" sentences
    never_ends = replace(
        plan,
        **{k: None for k in ("see_before", "see_after") if getattr(plan, k) is not None and not getattr(plan, k)[2]},
    )
    # a reader for whom "O can see X" means that X sees O
    reversed_sight = replace(
        plan,
        **{k: (v[1], v[0], v[2]) for k in ("see_before", "see_after") if (v := getattr(plan, k)) is not None},
    )
    return {
        "passes_along": _chain_reader(plan),
        "both_ways": _both_ways_reader(plan),
        "replaces": _sight_reader(plan, keep_first=False),
        "keeps_first": _sight_reader(plan, keep_first=True),
        "reversed": beliefs.make_story(reversed_sight).answer,
        "false_unknown": beliefs.UNKNOWN if story.kind == "false" else story.answer,
        "reality": story.reality[plan.containers[which]],
        "blind": ref.visibility_blind(story),
        "first": known[0] if known else beliefs.UNKNOWN,
        "cannot": beliefs.make_story(never_ends).answer,
    }


def _replay(plan: beliefs.Plan, say, fill) -> None:
    """Walk a story in its order for a made-up reader: the sight sentence before the fills (``say``), every
    fill (``fill(actor, drink)``), then the sight sentence before the refill and the refill itself."""
    say(plan.see_before)
    for actor, drink in enumerate(plan.drinks):
        fill(actor, drink)
    if plan.refill is not None:
        say(plan.see_after)
        fill(*plan.refill)


def _sight_reader(plan: beliefs.Plan, keep_first: bool) -> str:
    """The answer of a reader for whom O sees one actor at a time: a new ``O can see Y`` replaces whatever O
    could see before (``keep_first=False``), or is ignored while an earlier ``can see`` of O's still holds
    (``keep_first=True``), instead of adding Y to it."""
    who, which = plan.question
    visible: set[tuple[int, int]] = set()
    belief = beliefs.UNKNOWN

    def say(sentence: tuple[int, int, bool] | None) -> None:
        if sentence is not None:
            o, a, can = sentence
            if can:
                if keep_first and any(p[0] == o for p in visible):
                    return
                visible.difference_update({p for p in visible if p[0] == o})
                visible.add((o, a))
            else:
                visible.discard((o, a))

    def fill(actor: int, drink: str) -> None:
        nonlocal belief
        if actor == which and (who == actor or (who, actor) in visible):
            belief = drink

    _replay(plan, say, fill)
    return belief


def _chain_reader(plan: beliefs.Plan) -> str:
    """The answer of a reader for whom sight passes along a chain: if O can see X and X can see Y, O learns
    Y's fills too (each fill is known to everyone linked to its actor by a chain of ``can see`` in force)."""
    who, which = plan.question
    visible: set[tuple[int, int]] = set()
    belief = beliefs.UNKNOWN

    def say(sentence: tuple[int, int, bool] | None) -> None:
        if sentence is not None:
            o, a, can = sentence
            (visible.add if can else visible.discard)((o, a))

    def fill(actor: int, drink: str) -> None:
        nonlocal belief
        reach, grew = {who}, True
        while grew:  # everyone the asked character sees, directly or through others
            more = {a for o, a in visible if o in reach} - reach
            reach |= more
            grew = bool(more)
        if actor == which and actor in reach:
            belief = drink

    _replay(plan, say, fill)
    return belief


def _both_ways_reader(plan: beliefs.Plan) -> str:
    """The answer of a reader for whom ``X cannot see O`` also ends O's sight of X (a "cannot" read as ending
    sight both ways), while ``can see`` still runs one way."""
    who, which = plan.question
    visible: set[tuple[int, int]] = set()
    belief = beliefs.UNKNOWN

    def say(sentence: tuple[int, int, bool] | None) -> None:
        if sentence is not None:
            o, a, can = sentence
            if can:
                visible.add((o, a))
            else:
                visible.difference_update({(o, a), (a, o)})

    def fill(actor: int, drink: str) -> None:
        nonlocal belief
        if actor == which and (who == actor or (who, actor) in visible):
            belief = drink

    _replay(plan, say, fill)
    return belief


def _refilled(s: beliefs.Story, actor: int, rng: random.Random, **plan) -> beliefs.Story:
    """A story in ``s``'s cast where ``actor`` refills with a drink other than their own, with the plan's other
    fields (``see_before``, ``see_after``, ``question``) as given."""
    drink = rng.choice([d for d in beliefs.DRINKS if d != s.plan.drinks[actor]])
    return beliefs.make_story(replace(s.plan, refill=(actor, drink), **plan))


def _cannot_one_way(stories: list[beliefs.Story], rng: random.Random) -> list[beliefs.Story]:
    """For each story, a story in its cast where O can see X before the fills, X cannot see O before X refills,
    and the question asks O about X's container. The "cannot" is about X's sight of O, so O still sees the
    refill; a reader for whom it also ends O's sight of X gets them wrong (the generator makes such stories a
    few times in a thousand)."""
    out = []
    for s in stories:
        observer, actor = rng.sample(range(len(s.plan.characters)), 2)
        out.append(
            _refilled(
                s,
                actor,
                rng,
                see_before=(observer, actor, True),
                see_after=(actor, observer, False),
                question=(observer, actor),
            )
        )
    return out


def _chains(stories: list[beliefs.Story], rng: random.Random) -> list[beliefs.Story]:
    """For each three-character story, a story in its cast where sight would pass along a chain: X can see Y
    before the fills, O can see X before Y refills, and the question asks O about Y's container. O does not see
    Y, so O misses the refill (the generator makes such stories a few times in ten thousand)."""
    out = []
    for s in stories:
        observer, middle, actor = rng.sample(range(len(s.plan.characters)), 3)
        out.append(
            _refilled(
                s,
                actor,
                rng,
                see_before=(middle, actor, True),
                see_after=(observer, middle, True),
                question=(observer, actor),
            )
        )
    return out


def _two_sights(stories: list[beliefs.Story], rng: random.Random) -> list[beliefs.Story]:
    """For each three-character story, a story in its cast where one observer is told twice that they can
    see, about two different actors, one of whom (the refiller) then refills their container, and the question
    asks the observer about it. The observer saw the refill either way. In the first half of the stories the
    refiller's ``can see`` comes first, so a reader for whom the second ``can see`` replaces the first gets them
    wrong; in the second half it comes second, so a reader who keeps the first ``can see`` and ignores the later
    one gets them wrong (the generator makes such stories about once in a thousand)."""
    out = []
    for i, s in enumerate(stories):
        observer, actor, other = rng.sample(range(len(s.plan.characters)), 3)
        first, second = (actor, other) if i < len(stories) // 2 else (other, actor)
        out.append(
            _refilled(
                s,
                actor,
                rng,
                see_before=(observer, first, True),
                see_after=(observer, second, True),
                question=(observer, actor),
            )
        )
    return out


def check_believed_drink(fn: Callable) -> None:
    """fn(words: list[str]) -> str: the answer to the story's question (``words`` end with ``A``)."""
    name = _name(fn, "believed_drink")
    three = beliefs.sample_stories(CHECK_SEED, 100, more_characters=True)
    rng = random.Random(CHECK_SEED)
    stories = (
        beliefs.sample_stories(CHECK_SEED, 300) + three + _two_sights(three[:20], rng) + _chains(three[20:40], rng)
    )
    stories += _cannot_one_way(stories[:5] + three[40:45], rng)
    answers = []
    for s in stories:
        out = call(fn, list(s.words[:-1]), name=name)
        if not isinstance(out, str):
            raise CheckFailed(f"`{name}` should return a word (a drink or 'unknown'), not {type(out).__name__}.")
        answers.append(out)
    wrong = [(s, a) for s, a in zip(stories, answers) if a != s.answer]
    if not wrong:
        passed(name, f"the right belief on all {len(stories)} stories, three-character ones included")
        return
    mistakes = {
        "reversed": "visibility is reversed: 'O can see X' means the observer O watches X's fills, so O (not X) "
        "learns of them.",
        "false_unknown": "you answer 'unknown' for a false belief: a character who missed the last fill still "
        "believes the drink of the last fill they did see.",
        "reality": "you answer what the container holds now: a character who did not see the last fill still "
        "believes the drink they saw (and one who saw no fill believes nothing: 'unknown').",
        "blind": "you ignore who can see whom: a character also learns of a fill by watching its actor "
        "at that moment (a 'can see' sentence before the fill).",
        "first": "you take the first fill the character knows of: a later fill they saw replaces it.",
        "cannot": "a 'cannot see' sentence ends what an earlier 'can see' started: after it the observer "
        "misses the actor's fills.",
        "passes_along": "sight does not pass along: O learns only the fills of actors O can see. After 'X can see "
        "Y' and 'O can see X', O still misses Y's fills (X sees them, O does not).",
        "both_ways": "'X cannot see O' ends only X's sight of O: O's sight of X goes on, so after 'O can see X' "
        "and then 'X cannot see O', O still watches X's fills.",
        "replaces": "a new 'can see' adds to what the observer sees; it does not replace it: after 'O can see X' "
        "and then 'O can see Y', O watches both X and Y, until a 'cannot see' ends one of them.",
        "keeps_first": "a later 'can see' counts as much as the first: after 'O can see X' and then 'O can see Y', "
        "O watches Y's fills too (as well as X's), even while the first 'can see' still holds.",
    }
    for key, message in mistakes.items():
        if all(a == _wrong_answers(s)[key] for s, a in zip(stories, answers)):
            raise CheckFailed(f"`{name}`: {message}")
    s, a = wrong[0]
    raise CheckFailed(
        f"`{name}` is wrong on {len(wrong)} of {len(stories)} stories ({sum(x.kind == 'false' for x, _ in wrong)} "
        f"of them false beliefs). For example, on\n  {s.text[: s.text.rindex(' ')]}\nyou answer {a!r}; "
        f"the right answer is {s.answer!r} (a {s.kind!r} question)."
    )


# --- interchange in a subspace -------------------------------------------------------------------


def check_subspace_interchange(fn: Callable) -> None:
    """fn(x_base [n, d_model], x_source [n, d_model], basis [d_model, r]) -> [n, d_model]."""
    name = _name(fn, "subspace_interchange")
    g = torch.Generator().manual_seed(CHECK_SEED)
    n, d, r = 6, 16, 3
    x, xs = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    basis = ref.random_basis(d, r, seed=CHECK_SEED)
    explain = {
        RuntimeError: "the projector onto span(basis) is basis @ basis.T, [d_model, d_model] (basis.T @ basis is "
        "[r, r], the identity); a row vector's part in the subspace is x @ basis @ basis.T."
    }
    out = expect_tensor(call(fn, x, xs, basis, name=name, explain=explain), (n, d), ["story", "d_model"], name)
    proj = basis @ basis.T
    want = x + (xs - x) @ proj
    hints = [
        (xs @ proj, "you kept only the source's part in the subspace and dropped the rest of the base: add "
         "back what the base has outside the subspace, x_base − x_base B Bᵀ."),
        (x + xs @ proj, "you added the source's part without taking out the base's own part in the subspace: "
         "replace it, x_base + (x_source − x_base) B Bᵀ."),
        (xs + (x - xs) @ proj, "base and source are the wrong way round: the result keeps the *base* outside "
         "the subspace and takes the *source* inside it."),
        (xs, "that is the whole source activation: only the subspace's part should move."),
        (x, "that is the base unchanged: the source's part in the subspace should replace the base's."),
        (x + (xs - x) @ basis[:, :1] @ basis[:, :1].T, "you used only the basis's first column: the subspace is "
         "spanned by all r columns, so project with the whole basis, basis @ basis.T."),
        (x - (xs - x) @ proj, "the sign is flipped: the base's part in the subspace is *replaced* by the source's, "
         "x_base + (x_source − x_base) B Bᵀ, not moved away from it."),
        (x + (xs - x)[:, :r] @ torch.eye(r, d), "you replaced the first r coordinates: the subspace is spanned "
         "by the basis's columns, which are not coordinate axes; project with basis @ basis.T."),
    ]  # fmt: skip
    expect_close(out, want, name, "patched activations", atol=1e-4, hints=hints)
    passed(name, "inside the subspace from the source, outside it from the base")


# --- the causal model's prediction under an interchange of ordering IDs -------------------------------------------


def _by_recency(base: beliefs.Story, source: beliefs.Story) -> str:
    """The recency rule: the source's question indices mapped onto the base by which character
    filled their container most recently (:func:`beliefs.by_recency`), not by order of mention."""
    in_source, in_base = beliefs.by_recency(source.plan), beliefs.by_recency(base.plan)
    who, which = (in_base[in_source.index(i)] for i in source.plan.question)
    return beliefs.believed(base.plan, who, which)


def _refill_moved(pairs: list, rng: random.Random) -> list:
    """For each pair whose source has a refill, the pair with that refill given to another character
    (:func:`beliefs.with_refill_by`: every word in place, so the order of mention and the answer by
    order stay, while recency changes), where that makes the recency rule answer otherwise."""
    moved = []
    for base, source in pairs:
        if source.plan.refill is None:
            continue
        actors = [a for a in range(len(source.plan.characters)) if a != source.plan.refill[0]]
        for actor in rng.sample(actors, len(actors)):
            try:
                twin = beliefs.with_refill_by(source, actor)
            except ValueError:
                continue
            if _by_recency(base, twin) != beliefs.believed(base.plan, *twin.plan.question):
                moved.append((base, twin))
                break
    return moved


def check_order_prediction(fn: Callable) -> None:
    """fn(base: Story, source: Story) -> str: the base's answer once its question's ordering IDs (which
    character, which container, by order of mention) are the source's."""
    name = _name(fn, "order_prediction")
    rng = random.Random(CHECK_SEED)
    stories = beliefs.sample_stories(CHECK_SEED + 1, 200) + beliefs.sample_stories(
        CHECK_SEED + 1, 90, more_characters=True
    )
    # each index moved alone and both together, so that no fixed rule about the base alone can pass
    pairs = [
        (s, t)
        for i, s in enumerate(stories)
        if (t := beliefs.order_twin(s, rng, ("character", "container", "both")[i % 3])) is not None
    ]
    # sources whose refill another character does, so that recency and order of mention disagree
    pairs += _refill_moved(pairs, rng)
    got = [call(fn, base, source, name=name) for base, source in pairs]
    want = [beliefs.believed(base.plan, *source.plan.question) for base, source in pairs]
    if got == want:
        passed(name, f"the base's belief for the source's question by order, on {len(pairs)} pairs")
        return
    mistakes = [
        ([src.answer for _, src in pairs], "predicts the source's own answer, a drink the base story does not "
         "contain: that is what moving the *payload* would do. The IDs say which character and which container "
         "by order; the belief is then read from the base story."),
        ([base.answer for base, _ in pairs], "predicts no change: the IDs decide which of the base's characters "
         "and containers the question is about."),
        ([beliefs.believed(b.plan, b.plan.question[0], s.plan.question[1]) for b, s in pairs],
         "moves only the container: the character's ordering ID comes from the source too."),
        ([beliefs.believed(b.plan, s.plan.question[0], b.plan.question[1]) for b, s in pairs],
         "moves only the character: the container's ordering ID comes from the source too."),
        ([_by_recency(b, s) for b, s in pairs], "maps the question's character and container by which was "
         "filled most recently: that is the recency rule; the exercise asks for order of first mention (a "
         "refill done by another character, every word in place, changes recency, not the ordering IDs)."),
        ([b.reality[b.plan.containers[s.plan.question[1]]] for b, s in pairs], "gives what the container holds: "
         "the question asks what the character *believes* it holds (a false belief differs)."),
    ]  # fmt: skip
    for wrong, message in mistakes:
        if got == wrong:
            raise CheckFailed(f"`{name}` {message}")
    k = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    raise CheckFailed(
        f"`{name}` is wrong on {sum(a != b for a, b in zip(got, want))} of {len(pairs)} pairs, e.g. base "
        f"{pairs[k][0].text!r} with source {pairs[k][1].text!r}: you say {got[k]!r}, the causal model {want[k]!r}."
    )


# --- the patching sweep over roles and layers -------------------------------------------------------------------

SWEEP_LAYERS = [-1, 1, 2, 3]  # not every layer, so that a loop over the columns' indices shows; four, for three roles


def _sweep_pairs(model, n: int = 16):
    """The check's own drink twins: ``n`` fresh stories whose answer is a fill's drink, each beside its twin with
    that drink changed to one the story does not name (as section 3 makes them), as question batches, with the
    roles patched (the answer's drink, the asked container, ``A``)."""
    tok = model.tokenizer
    rng = random.Random(CHECK_SEED + 3)
    known = [s for s in beliefs.sample_stories(CHECK_SEED + 3, 4 * n) if beliefs.answer_fill(s.plan) is not None][:n]
    twins = [
        beliefs.with_drink(s, beliefs.answer_fill(s.plan), rng.choice([d for d in beliefs.DRINKS if d not in s.words]))
        for s in known
    ]
    base, source = ref.questions(known, tok), ref.questions(twins, tok)
    drink = torch.tensor([s.annotations["fills"][beliefs.answer_fill(s.plan)]["drink"] + 1 for s in known])
    return base, source, {"the fill's drink": drink, "asked container": base.at - 2, "A": base.at}


def _said(model, qs, patches: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The top word [story] of ``qs`` with ``patches`` ((hook name, new [story, d_model], positions [story]): each
    story's stream replaced at its own position) in place, none for the plain run: at each story's ``A`` and at the
    batch's last position."""
    device = ref.device_of(model)
    hooks = [(name, ref.replace_at(new.to(device), pos.to(device))) for name, new, pos in patches]
    logits = model.run_with_hooks(qs.tokens.to(device), fwd_hooks=hooks).cpu()
    return logits[torch.arange(len(qs)), qs.at].argmax(-1), logits[:, -1].argmax(-1)


def _sweep_answers(model, base, source, roles: dict, layers, shift: bool = False):
    """[role, layer, story] top words of ``base`` with the source's stream put in at each role's position after
    each layer (at A, and at the last position); ``shift``: the layer taken as the column's index instead."""
    # only the cache is read: the head unembeds the last position alone (the same activations)
    _, cache = model.run_with_cache(source.tokens.to(ref.device_of(model)), logits_to_keep=1)
    r = torch.arange(len(source))
    at_a = torch.zeros(len(roles), len(layers), len(base), dtype=torch.long)
    last = torch.zeros_like(at_a)
    for i, pos in enumerate(roles.values()):
        for j, layer in enumerate(layers):
            name = ref.resid_name(j if shift else layer)
            at_a[i, j], last[i, j] = _said(model, base, [(name, cache[name].cpu()[r, pos], pos)])
    return at_a, last


def _share(said: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (said == target).float().mean(-1)


def check_patching_sweep(fn: Callable, model) -> None:
    """fn(model, base, source, roles, layers, predicted) -> [role, layer]: the share of base stories whose answer
    at A is ``predicted`` with the residual stream after each layer replaced at each role's position by the
    source's (what ``bm.interchange_sweep`` computes)."""
    name = _name(fn, "patching_sweep")
    base, source, roles = _sweep_pairs(model)
    layers = list(SWEEP_LAYERS)
    hooks_before = sum(len(hp.fwd_hooks) for hp in model.hook_dict.values())

    def sweep(predicted):
        out = call(fn, model, base, source, roles, layers, predicted, name=name)
        left = sum(len(hp.fwd_hooks) for hp in model.hook_dict.values()) - hooks_before
        if left > 0:
            model.reset_hooks()
            raise CheckFailed(
                f"`{name}` left {left} hook(s) on the model, so every later run is patched too (they are removed "
                "now); add each hook only for its own run, model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])."
            )
        return expect_tensor(out, (len(roles), len(layers)), ["role", "layer"], name)

    with torch.no_grad():
        out = sweep(source.answer)
        at_a, last = _sweep_answers(model, base, source, roles, layers)
        want = _share(at_a, source.answer)
        hints = []
        if not torch.allclose(out.float().cpu(), want, atol=1e-4):
            shifted = _share(_sweep_answers(model, base, source, roles, layers, shift=True)[0], source.answer)
            everywhere = _share(_said(model, source, [])[0], source.answer)  # every position: the source's own run
            hints = [
                (_share(at_a, base.answer), "you count the answers that stay the base's own; the sweep records the "
                 "share that become `predicted` (the twin's drink): bm.agreement(logits, predicted)."),
                (_share(last, source.answer), "you read the answer at the last position of the batch; stories differ "
                 "in length and are padded after their A, so read each story's logits at its own A, base.at."),
                (shifted, f"the columns are the stream after layers {[*range(len(layers))]}, the columns' indices, "
                 f"not after the layers asked for, {layers}; take the layer from the list, "
                 "for j, layer in enumerate(layers), and patch bm.resid_name(layer)."),
                (everywhere.expand(len(roles), len(layers)), "every cell is the source's own answer: you replaced "
                 "the stream at every position; put the source's stream in only at the role's position, one per "
                 "story, bm.replace_at(new, positions)."),
                (want * len(base), "you count the answers that become `predicted`; the sweep records their share: "
                 "divide by the number of stories (bm.agreement takes the mean)."),
            ]  # fmt: skip
        expect_close(out, want, name, "shares of answers moved", atol=1e-4, hints=hints)
        # The same sweep asked for the base's own answer (section 3's control asks this): the share kept. A sweep
        # that counts the answers that changed, or that scores against the source's answer whatever `predicted`
        # says, gives the share moved again.
        kept = sweep(base.answer)
        want_kept = _share(at_a, base.answer)
        hints = [
            (want, "asked for predicted=base.answer, the sweep gave the share of answers that moved to the source's "
             "(it counts the answers that changed, or scores the source's answer whatever `predicted` says); "
             "count the answers equal to `predicted`, whichever it is: bm.agreement(logits, predicted)."),
        ]  # fmt: skip
        expect_close(kept, want_kept, name, "shares of answers that are `predicted`", atol=1e-4, hints=hints)
    passed(
        name,
        f"{len(roles)} roles × {len(layers)} layers on {len(base)} fresh twin pairs, as bm.interchange_sweep, "
        "asked for the source's answer and for the base's",
    )
