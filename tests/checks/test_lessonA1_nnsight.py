"""Every appendix check accepts a correct nnsight solution and rejects the stub and a plausible
mistake, on both zoo models stored as Hugging Face checkpoints (GPT-2's module names, Llama's)."""

import torch

from utils.checks import lessonA1_nnsight as c
from utils.model_zoo.nnsight_model import blocks

# --- correct solutions, through nnsight -----------------------------------------------


def nnsight_logit_diff(lm, tokens, last, answers, distractors):
    with lm.trace(tokens):
        logits = lm.lm_head.output.save()
    rows = torch.arange(len(last))
    return logits[rows, last, answers] - logits[rows, last, distractors]


def nnsight_patch(lm, layer, clean, corrupted, position):
    with lm.trace(clean):
        saved = blocks(lm)[layer].output[:, position].save()
    with lm.trace(corrupted):
        blocks(lm)[layer].output[:, position] = saved
        logits = lm.lm_head.output.save()
    return logits


def nnsight_steer(lm, layer, tokens, vector, start, stop):
    with lm.trace(tokens):
        blocks(lm)[layer].output[:, start:stop] += vector
        logits = lm.lm_head.output.save()
    return logits


# --- plausible mistakes ------------------------------------------------------------------


def _logit_diff_at_the_end(lm, tokens, last, answers, distractors):
    return nnsight_logit_diff(lm, tokens, torch.full_like(last, tokens.shape[1] - 1), answers, distractors)


def _patch_reversed(lm, layer, clean, corrupted, position):
    return nnsight_patch(lm, layer, corrupted, clean, position)


def _patch_the_block_before(lm, layer, clean, corrupted, position):
    return nnsight_patch(lm, layer - 1, clean, corrupted, position)


def _steer_from_bos(lm, layer, tokens, vector, start, stop):
    return nnsight_steer(lm, layer, tokens, vector, 0, stop)


def _steer_backwards(lm, layer, tokens, vector, start, stop):
    return nnsight_steer(lm, layer, tokens, -vector, start, stop)


def test_check_nnsight_logit_diff(prove_check, model):
    wrong = {"padded on the right": _logit_diff_at_the_end}
    prove_check(c.check_nnsight_logit_diff, nnsight_logit_diff, wrong, model)


def test_check_nnsight_patch(prove_check, model):
    wrong = {"direction is reversed": _patch_reversed, "block before": _patch_the_block_before}
    prove_check(c.check_nnsight_patch, nnsight_patch, wrong, model)


def test_check_nnsight_steer(prove_check, model):
    wrong = {"at BOS too": _steer_from_bos, "subtracted": _steer_backwards}
    prove_check(c.check_nnsight_steer, nnsight_steer, wrong, model)
