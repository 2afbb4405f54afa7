"""Every Storyworld seed the course uses, in one place.

A seed names a whole stream of documents (``storyworld.sample_docs(seed, n)``). Training
runs use small seeds (each zoo model's ``data_seed`` in ``utils.model_zoo.registry``); everything that
must be unseen by every model (held-out measurement, tests, lessons' fresh examples) draws
from ``HELD_OUT``, which no training run may use.

The lessons' own seeds (``LESSON_*``, apart from the ``*_CHECKS`` seeds that only feed the
exercise checks) can be swapped for fresh ones: a claim a lesson asserts must hold for the
model, not only for the one sample the lesson happens to draw. ``fresh_sample_seeds(k)`` gives
sample ``k`` (1, 2, ...) its own seed for every lesson seed, from ``FRESH_SAMPLES``, a range no
lesson, card or test uses otherwise. Setting the environment variable ``COURSE_FRESH_SAMPLE=k``
before the course is imported (``make robustness`` does it for each notebook it runs, and a
learner can do it before starting JupyterLab) makes this module hand out sample ``k``'s seeds.
"""

from __future__ import annotations

import os

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
FRESH_EVAL = 9100  # ``python -m utils.cards.model_cards``'s default fresh sample
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


LESSON_00 = 9500  # lesson 00's example documents
LESSON_01 = 9501  # lesson 01's songs
LESSON_01_PROSE = 9520  # lesson 01's stories whose attention it draws
LESSON_01_STORIES = 9521  # lesson 01's stories for the heads' scores on prose, and its explorer's examples
LESSON_01_PREFIX = 9522  # the story lesson 01 puts before repeated tokens
LESSON_01_VOCAB = 9523  # the documents whose tokens lesson 01 counts as seen words
LESSON_01_BETWEEN = 9524  # the story lesson 01 puts between two copies
LESSON_01_TOKENS = 9525  # seeds lesson 01's random tokens are drawn from (offsets from it)
LESSON_03_TEST = 9526  # lesson 03's test prompts: the circuit found on LESSON_03's is scored on these
LESSON_04_SPLIT = 9527  # lesson 04's train/test split of its stories
LESSON_04_CONTROL = 9528  # lesson 04's control task: the random label each word type gets
LESSON_04_RANDOM = 9529  # lesson 04's permutation tests and random directions (offsets from it)
LESSON_05_RANDOM = 9530  # lesson 05's random directions and its other random draws (offsets from it)
LESSON_07 = 9531  # lesson 07's documents whose tokens it counts, and its stories at the names
LESSON_07_PROMPTS = 9532  # the prompts lesson 07 steers
LESSON_07_RANDOM = 9533  # lesson 07's token splits, shuffles and random vectors (offsets from it)
LESSON_07_CHECKS = 9534  # what lesson 07's checks use
LESSON_A1_CHECKS = 9535  # the prompts the appendix's checks run both ways in on (the appendix reuses lessons' seeds)
LESSON_09 = 9536  # lesson 09's belief stories (two sets from one stream) and its random subspaces (offsets from it)
LESSON_09_CHECKS = 9537  # the belief stories lesson 09's checks use

LESSON_10 = 9538  # lesson 10's toy models and toy SAEs: their starting weights and data (offsets from it)
LESSON_10_DOCS = 9539  # the documents lesson 10 reads the zoo model's stream on
LESSON_10_CHECKS = 9540  # what lesson 10's checks use

LESSON_11 = 9541  # the prompts lesson 11 draws attribution graphs for (IOI and repeated tokens, offsets from it)
LESSON_11_TEST = 9542  # lesson 11's held-out prompts: what the graphs chose is tested on these
LESSON_11_CHECKS = 9543  # what lesson 11's checks use

LESSON_00_FRESH = 9544  # lesson 00's documents scored against the generator, per document and per token

# Fresh samples for the robustness sweep: sample k takes the SLOTS seeds from
# FRESH_SAMPLES.start + SLOTS * (k - 1), one per lesson seed, in the order of their values; lesson seeds past the
# first SLOTS take theirs from a second block, EXTRA_SLOTS per sample from EXTRA_START (so that adding a lesson leaves
# every earlier lesson's fresh samples as they were).
FRESH_SAMPLES = range(9600, 10000)
SLOTS = 25
EXTRA_START, EXTRA_SLOTS = 9900, 8
FRESH_SAMPLE_ENV = "COURSE_FRESH_SAMPLE"
CI_FRESH_SAMPLE = 1  # the one fresh sample the test suite runs every lesson on


def is_held_out(seed: int) -> bool:
    return seed in HELD_OUT


def lesson_seed_names() -> list[str]:
    """The names of the seeds a lesson draws its own examples from (not its checks' seeds)."""
    return sorted((n for n in _OWN if not n.endswith("_CHECKS")), key=_OWN.__getitem__)


def fresh_sample_seeds(k: int) -> dict[str, int]:
    """Sample ``k``'s seed for every lesson seed: held out, distinct, and never a lesson's own."""
    n_samples = samples_available()
    if not 1 <= k <= n_samples:
        raise ValueError(f"fresh samples are numbered 1 to {n_samples}, not {k}")
    names = lesson_seed_names()
    if len(names) > SLOTS + EXTRA_SLOTS:
        raise ValueError(
            f"{len(names)} lesson seeds do not fit in a fresh sample's {SLOTS} + {EXTRA_SLOTS} slots: raise EXTRA_SLOTS"
        )
    start, extra = FRESH_SAMPLES.start + SLOTS * (k - 1), EXTRA_START + EXTRA_SLOTS * (k - 1)
    return {name: start + i if i < SLOTS else extra + i - SLOTS for i, name in enumerate(names)}


def samples_available() -> int:
    """How many fresh samples there are (each needs its SLOTS seeds and its EXTRA_SLOTS ones)."""
    return min((EXTRA_START - FRESH_SAMPLES.start) // SLOTS, (FRESH_SAMPLES.stop - EXTRA_START) // EXTRA_SLOTS)


class FreshSampleError(ValueError):
    """``COURSE_FRESH_SAMPLE`` holds no sample number; a notebook shows the sentence as one red line."""

    def _render_traceback_(self) -> list[str]:  # IPython hook: no traceback, just the sentence
        return [f"\x1b[1;31m{self.args[0]}\x1b[0m"]


def fresh_sample() -> int | None:
    """The fresh sample this process was asked for (``COURSE_FRESH_SAMPLE``), or None."""
    value = os.environ.get(FRESH_SAMPLE_ENV, "").strip()
    if not value:
        return None
    n_samples = samples_available()
    try:
        k = int(value)
    except ValueError:
        k = None
    if k is None or not 1 <= k <= n_samples:
        raise FreshSampleError(
            f"{FRESH_SAMPLE_ENV}={value} is not a fresh sample's number (they are numbered 1 to {n_samples}): set it "
            f"to one of those, or unset it for the lessons' own seeds (`unset {FRESH_SAMPLE_ENV}` in the shell that "
            "starts JupyterLab or python, then restart the kernel)"
        )
    return k


_OWN = {n: v for n, v in globals().items() if n.startswith("LESSON_") and isinstance(v, int)}  # as defined above
if (_sample := fresh_sample()) is not None:
    globals().update(fresh_sample_seeds(_sample))
