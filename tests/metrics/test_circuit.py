"""The IOI circuit on each model card: classes by fixed rules, numbers measured, not typed."""

import pytest

from utils import seeds
from utils.metrics.circuit import RULES, classify
from utils.model_zoo.models import load_model, read_card, zoo
from utils.model_zoo.registry import entry


def head(**numbers) -> dict:
    """A head's numbers that give no class, with ``numbers`` changed."""
    base = dict(
        direct=0.0,
        patching=0.0,
        ablation=0.0,
        attn_answer=0.1,
        attn_subject=0.1,
        attn_s2=0.05,
        on_answer=0.0,
        on_subject=0.0,
    )
    return base | numbers


def test_a_head_with_no_strong_number_has_no_class():
    assert classify(head()) == []


def test_a_head_that_patching_finds_and_that_looks_at_the_repeated_name_reads_the_subject():
    assert classify(head(patching=0.3, attn_s2=0.5, attn_subject=0.6)) == ["subject reader"]
    # looking at the opening's names more than at S2: not a subject reader
    assert classify(head(patching=0.3, attn_s2=0.2, attn_answer=0.4, attn_subject=0.4)) == []


def test_a_head_that_ablation_needs_but_patching_does_not_see_copies_the_candidates():
    copier = head(ablation=0.4, patching=0.02, attn_answer=0.5, attn_subject=0.45, attn_s2=0.0)
    assert classify(copier) == ["candidate copier"]
    assert classify(copier | {"patching": 0.2}) == [], "patching sees it: not the blind spot the class names"
    assert classify(copier | {"attn_answer": 0.2, "attn_subject": 0.2}) == [], "it must look at the names"


def test_heads_that_write_the_answer_are_told_apart_by_where_they_look_and_what_they_lower():
    mover = head(direct=0.4, attn_answer=0.7, attn_subject=0.2, on_answer=6.0, on_subject=2.5)
    assert classify(mover) == ["name mover"]
    suppressor = head(direct=0.2, attn_answer=0.0, attn_subject=0.9, attn_s2=0.9, on_answer=-0.1, on_subject=-1.0)
    assert classify(suppressor) == ["subject suppressor"]
    both = head(direct=0.15, attn_answer=0.5, attn_subject=0.45, on_answer=5.0, on_subject=4.0)
    assert classify(both) == ["writes the answer"]
    assert classify(head(direct=-0.2)) == ["writes against the answer"]


def test_mlps_write_for_or_against_the_answer():
    assert classify({"direct": 0.5, "patching": 0.6}) == ["writes the answer"]
    assert classify({"direct": -0.5, "patching": 0.6}) == ["writes against the answer"]
    assert classify({"direct": 0.05, "patching": 0.9}) == []


def test_every_class_the_rules_give_is_stated_on_the_card():
    given = set()
    for numbers in (
        head(patching=0.3, attn_s2=0.5, attn_subject=0.6),
        head(ablation=0.4, patching=0.02, attn_answer=0.5, attn_subject=0.45, attn_s2=0.0),
        head(direct=0.4, attn_answer=0.7, attn_subject=0.2),
        head(direct=0.2, attn_answer=0.0, attn_subject=0.9, on_subject=-1.0),
        head(direct=0.15, attn_answer=0.5, attn_subject=0.45, on_answer=5.0, on_subject=4.0),
        head(direct=-0.2),
    ):
        given.update(classify(numbers))
    assert given == set(RULES)


@pytest.mark.parametrize("name", [n for n in zoo() if "ioi" in entry(n).measurements])
def test_each_cards_circuit_classes_follow_from_its_own_numbers(name):
    orders = read_card(name)["ioi_circuit"]
    assert set(orders) == {"subject first", "answer first"}
    for c in orders.values():
        numbers = c["heads"] | c["mlps"]
        assert c["classes"] == {k: classify(v) for k, v in numbers.items() if classify(v)}
        assert c["classes"], f"{name}'s card should name at least one component of its IOI circuit"
        assert c["clean_logit_diff"] > 0 > c["corrupted_logit_diff"]


def test_the_cards_circuit_is_measured_not_typed():
    from utils.metrics.circuit import ioi_circuit

    name = "storyworld-attn2l"  # the quickest to measure again
    fresh = ioi_circuit(load_model(name, device="cpu"), seeds.EVAL, seeds.CIRCUIT_REFERENCE)
    for order, card in read_card(name)["ioi_circuit"].items():
        assert fresh[order]["classes"] == card["classes"]
        for k, v in card["heads"].items():
            for metric, value in v.items():
                assert fresh[order]["heads"][k][metric] == pytest.approx(value, abs=2e-3), (order, k, metric)
