"""Lesson 09's checks accept a right answer written another way and reject the stub and each likely mistake."""

import pytest
import torch

from utils.checks import lesson09_beliefs as c
from utils.corpora import beliefs


def reader(
    forget_on_cannot=True,
    last=True,
    watch=True,
    reality=False,
    reversed_sight=False,
    unseen_unknown=False,
    replace_sight=False,
    keep_first_sight=False,
    pass_along_sight=False,
    cannot_both_ways=False,
):
    """A story reader with switches for each mistake: the right one with the defaults."""

    def seen_by(who, watching):
        reach = {a for o, a in watching if o == who}
        while pass_along_sight and (more := {a for o, a in watching if o in reach} - reach):
            reach |= more  # sight read as passing along: whom the observed see, the observer sees too
        return reach

    def believed_drink(words):
        q = len(words) - 1 - words[::-1].index("Q")
        who, container = words[q + 1], words[q + 2]
        watching, seen = set(), []
        sentences = " ".join(words[words.index(".") + 1 : q]).split(" . ")
        for sentence in sentences:
            w = sentence.strip(" .").split()
            if w[1] in ("can", "cannot"):
                if reversed_sight:
                    w[0], w[3] = w[3], w[0]
                if w[1] == "can":
                    if replace_sight:  # a new "can see" read as ending what the observer saw before
                        watching = {pair for pair in watching if pair[0] != w[0]}
                    if keep_first_sight and any(pair[0] == w[0] for pair in watching):
                        continue  # a later "can see" ignored while the observer's first one holds
                    watching.add((w[0], w[3]))
                elif forget_on_cannot:
                    watching.discard((w[0], w[3]))
                    if cannot_both_ways:  # "X cannot see O" read as ending O's sight of X too
                        watching.discard((w[3], w[0]))
            elif w[3] == container and (reality or w[0] == who or (watch and w[0] in seen_by(who, watching))):
                seen.append(w[5])
            elif w[3] == container and unseen_unknown:
                seen.append("unknown")  # a missed fill read as wiping the belief
        if not seen:
            return "unknown"
        return seen[-1] if last else seen[0]

    return believed_drink


def test_check_believed_drink(prove_check):
    prove_check(
        c.check_believed_drink,
        reader(),
        {
            "what the container holds now": reader(reality=True),
            "you ignore who can see whom": reader(watch=False),
            "the first fill": reader(last=False),
            "ends what an earlier 'can see' started": reader(forget_on_cannot=False),
            "visibility is reversed": reader(reversed_sight=True),
            "you answer 'unknown' for a false belief": reader(unseen_unknown=True),
            "a new 'can see' adds to what the observer sees; it does not replace it": reader(replace_sight=True),
            "a later 'can see' counts as much as the first": reader(keep_first_sight=True),
            "sight does not pass along": reader(pass_along_sight=True),
            "'X cannot see O' ends only X's sight of O": reader(cannot_both_ways=True),
            "is wrong on": lambda words: "unknown",
        },
    )


def test_check_believed_drink_refuses_a_non_word():
    import pytest

    with pytest.raises(c.CheckFailed, match="should return a word"):
        c.check_believed_drink(lambda words: 3)


def test_check_subspace_interchange(prove_check):
    def solution(x, xs, basis):
        inside = basis.T @ (xs - x).T  # [r, n]
        return x + (basis @ inside).T

    prove_check(
        c.check_subspace_interchange,
        solution,
        {
            "dropped the rest of the base": lambda x, xs, b: xs @ b @ b.T,
            "without taking out the base's own part": lambda x, xs, b: x + xs @ b @ b.T,
            "the wrong way round": lambda x, xs, b: xs + (x - xs) @ b @ b.T,
            "whole source activation": lambda x, xs, b: xs.clone(),
            "the base unchanged": lambda x, xs, b: x.clone(),
            "the first r coordinates": lambda x, xs, b: torch.cat([xs[:, : b.shape[1]], x[:, b.shape[1] :]], 1),
            "dimension 1 (d_model)": lambda x, xs, b: (xs - x) @ b,
            "the projector onto span(basis) is basis @ basis.T": lambda x, xs, b: x + (xs - x) @ b.T @ b,
            "only the basis's first column": lambda x, xs, b: x + (xs - x) @ b[:, :1] @ b[:, :1].T,
            "the sign is flipped": lambda x, xs, b: x - (xs - x) @ b @ b.T,
            "wrong patched activations": lambda x, xs, b: x + (xs - x) @ b @ b.T * 0.5,
        },
    )


def by_recency(base, source):
    """The question's indices mapped by which character filled their container last, not by order."""
    in_source, in_base = beliefs.by_recency(source.plan), beliefs.by_recency(base.plan)
    who, which = (in_base[in_source.index(i)] for i in source.plan.question)
    return beliefs.believed(base.plan, who, which)


def test_check_order_prediction(prove_check):
    def solution(base, source):
        who, which = source.plan.question
        twin = beliefs.with_question(base, (who, which))  # another way to the same answer
        return twin.answer

    prove_check(
        c.check_order_prediction,
        solution,
        {
            "the source's own answer": lambda base, source: source.answer,
            "predicts no change": lambda base, source: base.answer,
            "moves only the container": lambda b, s: beliefs.believed(b.plan, b.plan.question[0], s.plan.question[1]),
            "moves only the character": lambda b, s: beliefs.believed(b.plan, s.plan.question[0], b.plan.question[1]),
            "what the container holds": lambda b, s: b.reality[b.plan.containers[s.plan.question[1]]],
            "that is the recency rule; the exercise asks for order of first mention": by_recency,
            "is wrong on": lambda base, source: base.words[base.annotations["fills"][0]["drink"]],
        },
    )


def test_the_checks_stories_hold_every_mistake_apart():
    """Each wrong reader differs from the truth somewhere, so none of the hints can shadow another."""
    stories = beliefs.sample_stories(c.CHECK_SEED, 300)
    for key in ("reality", "blind", "first", "cannot"):
        assert any(c._wrong_answers(s)[key] != s.answer for s in stories), key


def test_check_order_prediction_rejects_a_rule_that_ignores_the_source():
    import pytest

    def other_of_both(base, source):  # right on two-character "both" twins only
        n = len(base.plan.characters)
        who, which = base.plan.question
        believed = beliefs.beliefs_of(base.plan)
        return believed[base.plan.characters[(who + 1) % n]][base.plan.containers[(which + 1) % n]]

    with pytest.raises(c.CheckFailed):
        c.check_order_prediction(other_of_both)


@pytest.fixture(scope="module")
def beliefs_model():
    """The lesson's model, on the CPU, gradients off."""
    from utils import load_model

    m = load_model("beliefs-llama", device="cpu")
    with torch.no_grad():
        yield m


def sweep(at_last=False, index_as_layer=False, target="predicted", every_position=False, count=False, keep=False):
    """A patching sweep with switches for each mistake: the right one with the defaults."""
    from utils.metrics import beliefs as bm

    def patching_sweep(model, base, source, roles, layers, predicted):
        out = torch.zeros(len(roles), len(layers))
        r = torch.arange(len(base))
        for j, layer in enumerate(layers):
            name = bm.resid_name(j if index_as_layer else layer)
            new = bm.activations(model, source, name)  # recorded once per layer: another way to the same streams
            for i, pos in enumerate(roles.values()):
                if every_position:
                    hook = lambda act, hook, new=new: new  # noqa: E731
                else:
                    hook = bm.replace_at(new[r, pos], pos)
                if keep:
                    model.add_hook(name, hook)
                    logits = model(base.tokens)
                else:
                    logits = model.run_with_hooks(base.tokens, fwd_hooks=[(name, hook)])
                said = logits[:, -1] if at_last else logits[r, base.at]
                if target == "changed":  # the answers that are no longer the base's, whatever `predicted` says
                    right = said.argmax(-1) != base.answer
                else:
                    wanted = {"predicted": predicted, "base": base.answer, "source": source.answer}[target]
                    right = said.argmax(-1) == wanted
                out[i, j] = right.float().sum() if count else right.float().mean()
        return out

    return patching_sweep


def test_check_patching_sweep(prove_check, beliefs_model):
    prove_check(
        c.check_patching_sweep,
        sweep(),
        {
            "you count the answers that stay the base's own": sweep(target="base"),
            "it counts the answers that changed": sweep(target="changed"),
            "scores the source's answer whatever `predicted` says": sweep(target="source"),
            "you read the answer at the last position of the batch": sweep(at_last=True),
            "the columns' indices": sweep(index_as_layer=True),
            "you replaced the stream at every position": sweep(every_position=True),
            "the sweep records their share": sweep(count=True),
            "hook(s) on the model, so every later run is patched too": sweep(keep=True),
            "dimension 0 (role)": lambda *args: sweep()(*args).T,
            "gives the wrong shares of answers moved": lambda *args: sweep()(*args) * 0.5,
        },
        beliefs_model,
    )
    assert not any(hp.fwd_hooks for hp in beliefs_model.hook_dict.values())  # the check took the left hooks off
