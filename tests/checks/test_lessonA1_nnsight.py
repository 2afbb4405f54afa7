"""Every appendix check accepts a correct nnsight solution and rejects the stub and plausible
mistakes, on both zoo models stored as Hugging Face checkpoints (GPT-2's module names, Llama's)."""

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


def nnsight_patch_sweep(lm, clean, corrupted, metric):
    out = torch.zeros(len(blocks(lm)), clean.shape[1])
    for layer in range(len(blocks(lm))):
        for position in range(clean.shape[1]):
            out[layer, position] = float(metric(nnsight_patch(lm, layer, clean, corrupted, position)))
    return out


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


def _sweep_one_position_short(lm, clean, corrupted, metric):
    out = torch.zeros(len(blocks(lm)), clean.shape[1])
    for layer in range(len(blocks(lm))):
        for position in range(clean.shape[1] - 1):
            out[layer, position] = float(metric(nnsight_patch(lm, layer, clean, corrupted, position)))
    return out


def _sweep_one_block_short(lm, clean, corrupted, metric):
    out = torch.zeros(len(blocks(lm)), clean.shape[1])
    for layer in range(len(blocks(lm)) - 1):
        for position in range(clean.shape[1]):
            out[layer, position] = float(metric(nnsight_patch(lm, layer, clean, corrupted, position)))
    return out


def _sweep_reversed(lm, clean, corrupted, metric):
    return nnsight_patch_sweep(lm, corrupted, clean, metric)


def _sweep_one_block_everywhere(lm, clean, corrupted, metric):
    out = torch.zeros(len(blocks(lm)), clean.shape[1])
    for layer in range(len(blocks(lm))):
        for position in range(clean.shape[1]):
            out[layer, position] = float(metric(nnsight_patch(lm, 1, clean, corrupted, position)))
    return out


def _sweep_transposed(lm, clean, corrupted, metric):
    return nnsight_patch_sweep(lm, clean, corrupted, metric).T


def _sweep_without_the_last_position(lm, clean, corrupted, metric):
    return nnsight_patch_sweep(lm, clean, corrupted, metric)[:, :-1]


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


def test_check_nnsight_patch_sweep(prove_check, model):
    wrong = {
        "one position short": _sweep_one_position_short,
        "one block short": _sweep_one_block_short,
        "corrupted run's stream into the clean run": _sweep_reversed,
        "every row is block 1's patch": _sweep_one_block_everywhere,
        "which is [position, layer]": _sweep_transposed,
        "dimension 1 (position)": _sweep_without_the_last_position,
    }
    prove_check(c.check_nnsight_patch_sweep, nnsight_patch_sweep, wrong, model)


def test_check_nnsight_steer(prove_check, model):
    wrong = {"at BOS too": _steer_from_bos, "subtracted": _steer_backwards}
    prove_check(c.check_nnsight_steer, nnsight_steer, wrong, model)
