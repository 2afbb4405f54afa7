"""Seeds: no training run ever sees the documents that held-out measurements draw."""

from utils import seeds
from utils.model_zoo.registry import SPECS

NOT_SEEDS = {"TOKENIZER", "SLOTS", "CI_FRESH_SAMPLE"}  # the tokenizer's training seed; the sweep's settings
MEASUREMENT_SEEDS = {
    name: value
    for name, value in vars(seeds).items()
    if name.isupper() and isinstance(value, int) and name not in NOT_SEEDS
}


def test_no_training_run_or_the_tokenizer_uses_a_held_out_seed():
    training = {s.data_seed for s in SPECS.values()} | {seeds.TOKENIZER}
    assert not any(seeds.is_held_out(seed) for seed in training)


def test_every_measurement_seed_is_held_out_and_distinct():
    assert MEASUREMENT_SEEDS and all(seeds.is_held_out(v) for v in MEASUREMENT_SEEDS.values()), MEASUREMENT_SEEDS
    assert len(set(MEASUREMENT_SEEDS.values())) == len(MEASUREMENT_SEEDS)


def test_no_measurement_seed_lies_in_the_range_kept_for_fresh_samples():
    assert not any(v in seeds.FRESH_SAMPLES for v in MEASUREMENT_SEEDS.values())
