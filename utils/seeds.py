"""Every Storyworld seed the course uses, in one place.

A seed names a whole stream of documents (``storyworld.sample_docs(seed, n)``). Training
runs use small seeds (each zoo model's ``data_seed`` in ``utils.registry``); everything that
must be unseen by every model (held-out measurement, tests, lessons' fresh examples) draws
from ``HELD_OUT``, which no training run may use.
"""

from __future__ import annotations

TOKENIZER = 1  # documents the BPE tokenizer is trained on
HELD_OUT = range(9000, 10000)  # no training run may use these

# Model cards: every number on a card is measured on these.
EVAL = 9000  # loss, floor, IOI, songs; the emotion probe's test documents
PROBE_TRAIN = 9001  # documents the card's emotion probe is fitted on
RANDOM_TOKENS = 9002  # repeated random tokens for the head scores
CIRCUIT_REFERENCE = 9003  # prompts whose mean head outputs ablate a head for the card's IOI circuit
STEERING_PROMPTS = 9004  # stories cut before their first feeling, which the card's steering sweep continues

# Fresh looks at the same quantities on documents the cards never saw.
COURSE_CHECK = 9050  # ``make course``'s quick look at each model
FRESH_EVAL = 9100  # ``python -m utils.evaluate``'s default fresh sample
TEST_SAMPLE = 9300  # the test suite's small re-measurement of every card
TEST_SONGS = 9400  # the test suite's held-out songs

# Lessons' own examples.
LESSON_02 = 9502  # lesson 02's transfer prompts
LESSON_02_CHECKS = 9503  # the prompts lesson 02's checks run the model on
LESSON_03 = 9504  # lesson 03's clean and corrupted prompts
LESSON_03_REFERENCE = 9505  # lesson 03's reference prompts, whose mean activations ablate a head
LESSON_03_CHECKS = 9506  # the prompts lesson 03's checks run the model on
LESSON_04 = 9507  # lesson 04's narratives: the probes' training and test documents
LESSON_04_CHECKS = 9508  # the narratives lesson 04's checks label
LESSON_05 = 9509  # lesson 05's prompts and its unrelated documents (its steering vectors come from LESSON_04)
LESSON_05_CHECKS = 9510  # the stories and prompts lesson 05's checks use
LESSON_06 = 9511  # lesson 06's documents of every family (its steering prompts are lesson 05's)
LESSON_06_CHECKS = 9512  # the documents lesson 06's checks use
LESSON_08 = 9513  # lesson 08's held-out countdown traces (its test sites and generations)
LESSON_08_TRAIN = 9514  # the countdown traces lesson 08's verdict probes are fitted on


def is_held_out(seed: int) -> bool:
    return seed in HELD_OUT
