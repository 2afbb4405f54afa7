"""The registry is the zoo's one identity: names, training recipes, targets, tolerances, lessons."""

import pytest

from utils.model_zoo import models, registry, train


def test_every_entry_is_filed_under_its_own_name():
    for name, model in registry.ZOO.items():
        assert model.name == name
        assert model.planned or model.spec.name == name


def test_the_loaders_and_the_trainer_know_exactly_the_registrys_models():
    assert set(models.ZOO) == set(registry.ZOO)
    assert set(train.SPECS) == {n for n, m in registry.ZOO.items() if not m.planned}


def test_every_target_can_be_checked_against_a_fresh_sample():
    for model in registry.ZOO.values():
        assert set(model.targets) <= set(model.tolerance), model.name
        known = set(registry.MEASUREMENTS) | set(registry.COUNTDOWN_MEASUREMENTS) | set(registry.BELIEFS_MEASUREMENTS)
        assert set(model.measurements) <= known


def test_a_missed_target_is_a_target_and_says_what_was_measured():
    for model in registry.ZOO.values():
        assert set(model.missed) <= set(model.targets), model.name
        assert all(len(why) > 20 for why in model.missed.values()), model.name


def test_every_lesson_number_has_a_default_model():
    lessons = sorted(lesson for m in registry.ZOO.values() for lesson in m.lessons)
    assert {f"{k:02d}" for k in range(9)} <= set(lessons)


def test_an_unknown_name_lists_the_zoo():
    with pytest.raises(KeyError, match="storyworld-4l"):
        registry.entry("storyworld-5l")
