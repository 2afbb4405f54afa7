"""Checks for lesson 00, orientation: ``check_<exercise>(your_function)``.

Each check compares the learner's function with the reference and, where a known mistake
gives a different answer, says which mistake it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch

from utils.checks.framework import CheckFailed, as_number, call, expect_close, expect_number, expect_tensor, passed
from utils.metrics.loss import mean_loss, per_token_loss

ORIENTATION_PROMPTS = (
    "Ann was in the park. Ann felt",
    "When Bob and Eve went to the school, Bob gave the kite to",
    "Today Mia made a list: cup hat drum. Mia read the list again: cup",
    "Bob felt",  # short: without the start token, the prediction changes
)


def _ending(text: str, words: int = 3) -> str:
    """The last few whole words of a prompt, for the pass line."""
    parts = text.split()
    return ("…" if len(parts) > words else "") + " ".join(parts[-words:])


def _top_prediction_mistakes(model, prompt: str, logits: torch.Tensor) -> list[tuple[str, str]]:
    """(what a known mistake returns, the sentence that names it) for logits ``[position, d_vocab]``."""
    text = model.to_string
    with torch.no_grad():
        no_start = model(model.to_tokens(prompt, prepend_bos=False))[0, -1]
    return [
        (
            text(logits[-2].argmax()),
            "you read logits[0, -2], the prediction for the text's own last token, which the model has "
            "already seen; the token after the whole text is predicted at the last position, logits[0, -1].",
        ),
        (
            text(logits[0].argmax()),
            "you read the prediction at the first position; the next token after the whole text is "
            "predicted at the last position (logits[0, -1]).",
        ),
        (
            text(logits.softmax(0)[-1].argmax()),
            "you took the softmax over positions (dim=1 of [batch, position, d_vocab]); probabilities are "
            "over the vocabulary, dim=-1. The argmax of the logits needs no softmax at all.",
        ),
        (
            text(logits[None].softmax(0)[0, -1].argmax()),
            "you took the softmax over the batch dimension (dim=0), which has one element, so every "
            "probability is 1; the vocabulary is dim=-1 (and the argmax needs no softmax).",
        ),
        (
            text(no_start.argmax()),
            "you left out the start token. model.to_tokens(text) puts <|endoftext|> first, as every "
            "training document began; with prepend_bos=False, or a tokenizer call that adds no start "
            "token, the model reads the text as if it were cut from the middle of a document.",
        ),
    ]


def check_top_prediction(fn: Callable, model) -> None:
    """fn(model, text) -> the most likely next token, as a string."""
    name = getattr(fn, "__name__", "top_prediction")
    for text in ORIENTATION_PROMPTS:
        out = call(fn, model, text, name=name)
        with torch.no_grad():
            logits = model(model.to_tokens(text))[0]
        want = model.to_string(logits[-1].argmax())
        if isinstance(out, torch.Tensor) or isinstance(out, int):
            raise CheckFailed(f"`{name}` returned a token id ({int(out)}); return its text with model.to_string(id).")
        if not isinstance(out, str):
            raise CheckFailed(f"`{name}` should return a string, but returned {type(out).__name__}.")
        if out != want:
            for wrong, message in _top_prediction_mistakes(model, text, logits):
                if out == wrong:
                    raise CheckFailed(f"`{name}`: {message}")
            raise CheckFailed(f"`{name}`({text!r}) gave {out!r}; the model's top prediction is {want!r}.")
    passed(name, "on " + ", ".join(repr(_ending(p)) for p in ORIENTATION_PROMPTS))


def check_mean_loss(fn: Callable) -> None:
    """fn(logits [batch, pos, vocab], tokens [batch, pos]) -> mean next-token loss (a scalar)."""
    name = getattr(fn, "__name__", "mean_loss")
    g = torch.Generator().manual_seed(11)
    logits, tokens = torch.randn(3, 8, 13, generator=g), torch.randint(0, 13, (3, 8), generator=g)
    out = call(fn, logits, tokens, name=name)
    if isinstance(out, torch.Tensor) and out.numel() != 1:
        per_token = per_token_loss(logits, tokens)  # [batch, pos - 1]
        if tuple(out.shape) == (3,) and torch.allclose(out.float(), per_token.mean(1), atol=1e-4):
            raise CheckFailed(
                f"`{name}` returned one loss per sequence: you averaged over positions only. "
                f"Average over the batch too, to get one number."
            )
        if tuple(out.shape) == (7,) and torch.allclose(out.float(), per_token.mean(0), atol=1e-4):
            raise CheckFailed(
                f"`{name}` returned one loss per position: you averaged over the batch only. "
                f"Average over the positions too, to get one number."
            )
        raise CheckFailed(
            f"`{name}` returned shape {tuple(out.shape)}; average over every prediction to get one number."
        )
    ref = mean_loss(logits, tokens).item()
    lp = logits.log_softmax(-1)
    picked = lp[:, :-1].gather(-1, tokens[:, 1:, None])
    over_positions = (
        "you normalised over positions (log_softmax(dim=1)); each prediction is a distribution over "
        "the vocabulary, dim=-1."
    )
    wrong = [
        (
            -lp.gather(-1, tokens[..., None]).mean(),
            "no shift: the logits at position t predict token t+1 (use logits[:, :-1] with tokens[:, 1:]).",
        ),
        (
            -lp[:, 1:].gather(-1, tokens[:, :-1, None]).mean(),
            "the shift goes the wrong way: the logits at position t predict the token at t+1, so "
            "logits[:, :-1] go with tokens[:, 1:] (not logits[:, 1:] with tokens[:, :-1]).",
        ),
        (-logits[:, :-1].gather(-1, tokens[:, 1:, None]).mean(), "apply log_softmax to the logits first."),
        (-logits[:, :-1].log_softmax(1).gather(-1, tokens[:, 1:, None]).mean(), over_positions),
        (-logits.log_softmax(1)[:, :-1].gather(-1, tokens[:, 1:, None]).mean(), over_positions),
        (
            picked.mean(),
            "the loss is the *negative* log-probability (a positive number): put a minus sign in front.",
        ),
        (
            -lp[:, :-1].mean(),
            "you averaged the log-probabilities of every vocabulary entry; take only the actual next "
            "token's (gather with tokens[:, 1:]) and average those.",
        ),
        (
            -lp[:, 1:].gather(-1, tokens[:, 1:, None]).mean(),
            "logits[:, 1:] with tokens[:, 1:] pairs each position's logits with its own token; the "
            "logits at position t predict the token at t+1, so drop the *last* logits: logits[:, :-1] "
            "with tokens[:, 1:].",
        ),
        (per_token_loss(logits, tokens).sum(), "take the mean over predictions, not the sum."),
        (
            per_token_loss(logits, tokens).sum(1).mean(),
            "you summed over positions, then averaged over the batch (a loss per sequence); the mean "
            "loss averages over every prediction, batch and positions together.",
        ),
    ]
    got = as_number(out)
    for value, message in wrong:
        if math.isfinite(got) and abs(got - value.item()) < 1e-4:
            raise CheckFailed(f"`{name}`: {message}")
    expect_number(out, ref, name, "the loss", 1e-4)
    passed(name)


def _by_hand_without_weights(model, resid: torch.Tensor) -> list[torch.Tensor]:
    """Normalisations written by hand that leave out ln_final's learned weights."""
    eps = getattr(model.cfg, "eps", 1e-5)
    if getattr(model.cfg, "normalization_type", "LN") == "RMS":
        return [resid / (resid.pow(2).mean(-1, keepdim=True) + eps).sqrt(), resid / resid.norm(dim=-1, keepdim=True)]
    centred = resid - resid.mean(-1, keepdim=True)
    return [
        torch.nn.functional.layer_norm(resid, resid.shape[-1:], eps=eps),
        centred / centred.std(-1, keepdim=True),  # the unbiased standard deviation, no eps
        centred / centred.std(-1, keepdim=True, unbiased=False),
    ]


def check_logits_from_residual(fn: Callable, model) -> None:
    """fn(model, resid [batch, pos, d_model]) -> logits [batch, pos, d_vocab], as the model computes them.

    A model whose unembedding bias is zero cannot tell a function that adds ``model.b_U`` from one
    that forgets it, so for the check the bias is given random values, then put back.
    """
    name = getattr(fn, "__name__", "logits_from_residual")
    tokens = model.to_tokens(ORIENTATION_PROMPTS[0])
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    bias = model.b_U
    saved = bias.detach().clone()
    zero_bias = not bool(saved.any())
    try:
        if zero_bias:
            with torch.no_grad():
                g = torch.Generator().manual_seed(13)
                bias.copy_(torch.randn(bias.shape, generator=g).to(bias))
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n == last)
        resid = cache[last]
        out = call(fn, model, resid, name=name)
        out = expect_tensor(out, logits.shape, ["batch", "position", "d_vocab"], name)
        missing_bias = "add the unembedding bias model.b_U."
        if zero_bias:
            missing_bias += (
                " (This model's bias is zero, so for this check it holds random values: a function that "
                "leaves it out gives the right logits only by luck.)"
            )
        with torch.no_grad():
            normed = model.ln_final(resid)
            hints = []
            cap = getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0
            if cap > 0:  # Gemma-2 squashes its logits
                hints.append(
                    (
                        normed @ model.W_U + model.b_U,
                        f"this model soft-caps its logits: it returns cap · tanh(logits / cap) with cap = "
                        f"model.cfg.output_logits_soft_cap = {cap:g}, so apply that last.",
                    )
                )
            hints.append(
                (
                    resid @ model.W_U + model.b_U,
                    "apply the final normalisation (model.ln_final) before multiplying by W_U.",
                )
            )
            if not torch.equal(model.W_E.T, model.W_U):  # with tied weights the two are the same matrix
                hints += [
                    (
                        normed @ model.W_E.T + model.b_U,
                        "W_E.T is the transposed embedding, a different matrix: the unembedding is model.W_U "
                        "[d_model, d_vocab] (the two are equal only in models with tied weights).",
                    ),
                    (
                        resid @ model.W_E.T + model.b_U,
                        "two steps differ: apply the final normalisation (model.ln_final) first, and unembed "
                        "with model.W_U, not the transposed embedding W_E.T.",
                    ),
                ]
            hints.append((normed @ model.W_U, missing_bias))
            for by_hand in _by_hand_without_weights(model, resid):
                for unembedded in (by_hand @ model.W_U + model.b_U, by_hand @ model.W_U):
                    hints.append(
                        (
                            unembedded,
                            "you normalised by hand but left out the final normalisation's learned weights "
                            "(model.ln_final.w, and the bias model.ln_final.b where there is one): call "
                            "model.ln_final(resid), which applies them.",
                        )
                    )
        expect_close(out, logits, name, "logits", atol=1e-3, hints=hints)
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    passed(name, "your logits equal the model's")


def check_boost_hook(fn: Callable) -> None:
    """fn(resid, hook, direction, scale) -> resid with scale * direction added at the last position only."""
    name = getattr(fn, "__name__", "boost_hook")
    g = torch.Generator().manual_seed(12)
    resid, direction = torch.randn(2, 5, 8, generator=g), torch.randn(8, generator=g)
    hook = SimpleNamespace(name="blocks.3.hook_resid_post")
    if not callable(fn):
        call(fn, name=name)  # says: pass the function itself
    given = resid.clone()  # the learner's function gets its own copy, so an in-place edit shows
    out = call(lambda: fn(given, hook, direction.clone(), 2.5), name=name)
    if not torch.equal(given, resid):
        raise CheckFailed(
            f"`{name}` changed `resid` in place (for example `resid[:, -1] += ...` on the tensor it was "
            f"given). Other parts of the run can hold that same tensor (the residual stream entering a block "
            f"is the one the block before it returned, maybe already cached), and an in-place edit changes "
            f"it there too: start with `resid = resid.clone()`."
        )
    if out is None:
        raise CheckFailed(f"`{name}` returned None: a hook's return value replaces the activation, so return it.")
    out = expect_tensor(out, resid.shape, ["batch", "position", "d_model"], name)
    ref = resid.clone()
    ref[:, -1] += 2.5 * direction
    last_batch = resid.clone()
    last_batch[-1] += 2.5 * direction
    expect_close(
        out,
        ref,
        name,
        "activation",
        hints=[
            (
                resid + 2.5 * direction,
                "you added the direction at every position; add it at the last position only (resid[:, -1]).",
            ),
            (
                resid.clone().index_add_(1, torch.tensor([0]), (2.5 * direction).expand(2, 1, 8)),
                "you added it at the first position; the last one is resid[:, -1].",
            ),
            (
                last_batch,
                "resid[-1] is the last batch element (dimension 0); the last position of every batch "
                "element is resid[:, -1].",
            ),
            (
                resid.clone().index_add_(1, torch.tensor([4]), direction.expand(2, 1, 8)),
                "multiply the direction by `scale`.",
            ),
            (
                resid.clone().index_add_(1, torch.tensor([4]), (2.5 * direction / direction.norm()).expand(2, 1, 8)),
                "you divided `direction` by its norm: use it as it is given. The caller chooses its length "
                "(this lesson passes a unit vector already), and `scale` alone sets the size of the push.",
            ),
        ],
    )
    passed(name)


# Pushes for the sweep's check, in units of the residual vector's length: out of order, so that a hook left on the
# model between runs (each push added to the ones before it) gives other rows than one run per push.
SWEEP_PUSHES = (0.0, 1.0, 0.5, 2.0)


def _live_hooks(model) -> int:
    """How many hooks that are not permanent sit on the model's hook points (each point once, whatever its names)."""
    points = {id(h): h for h in getattr(model, "hook_dict", {}).values()}.values()
    return sum(1 for h in points for handle in getattr(h, "fwd_hooks", []) if not getattr(handle, "is_permanent", 0))


def _pushed_logits(model, tokens: torch.Tensor, hook_name: str, direction: torch.Tensor, scale: float):
    """The last position's logits ``[d_vocab]`` with ``scale * direction`` added there at ``hook_name``."""

    def push(resid, hook):
        resid = resid.clone()
        resid[:, -1] = resid[:, -1] + scale * direction
        return resid

    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, push)])[0, -1]


def check_push_sweep(fn: Callable, model) -> None:
    """fn(model, tokens [1, pos], hook_name, direction [d_model], scales) -> the last position's logits
    ``[scale, d_vocab]``, row i from one run pushed by ``scales[i] * direction`` at ``hook_name``.

    It runs on another prompt than the lesson's, at a block before the last, along a random unit direction.
    """
    name = getattr(fn, "__name__", "push_sweep")
    n_layers = model.cfg.n_layers
    hook_name, last = f"blocks.{max(0, n_layers - 3)}.hook_resid_post", f"blocks.{n_layers - 1}.hook_resid_post"
    tokens = model.to_tokens(ORIENTATION_PROMPTS[1])
    g = torch.Generator().manual_seed(14)
    direction = torch.randn(model.cfg.d_model, generator=g)
    direction = (direction / direction.norm()).to(model.W_U)
    model.reset_hooks()  # what an earlier attempt may have left on the model
    with torch.no_grad():
        # only the cache is read: the head unembeds the last position alone (the same activations)
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == hook_name, logits_to_keep=1)
    size = cache[hook_name][0, -1].norm().item()
    scales = [k * size for k in SWEEP_PUSHES]
    try:
        out = call(fn, model, tokens, hook_name, direction, list(scales), name=name)
        left = _live_hooks(model)
    finally:
        model.reset_hooks()
    adds_up = (
        "the pushes add up from one run to the next, because each hook stayed on the model after its run; use "
        "model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)]), which takes its hook off when the run ends"
    )
    if left:
        raise CheckFailed(f"`{name}`: {adds_up} (the check has taken off the {left} it found).")
    ref = torch.stack([_pushed_logits(model, tokens, hook_name, direction, s) for s in scales])
    if isinstance(out, (list, tuple)) and out and all(isinstance(o, torch.Tensor) for o in out):
        raise CheckFailed(
            f"`{name}` returned a {type(out).__name__} of {len(out)} rows; stack them into one tensor "
            "[scale, d_vocab] with torch.stack(rows)."
        )
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape == (len(scales) - 1, ref.shape[1]):
        for kept, which in ((ref[1:], "first"), (ref[:-1], "last")):
            if torch.allclose(out.detach().float().cpu(), kept.float().cpu(), atol=1e-3, rtol=1e-3):
                raise CheckFailed(
                    f"`{name}` returned one row too few: the loop left out the {which} scale; loop over every "
                    "one (for scale in scales), one row each."
                )
    out = expect_tensor(out, ref.shape, ["scale", "d_vocab"], name)
    cumulative = torch.tensor(scales).cumsum(0).tolist()
    hints = [
        (torch.stack([_pushed_logits(model, tokens, hook_name, direction, s) for s in cumulative]), adds_up + "."),
        (
            ref.softmax(-1),
            "these are probabilities, not logits; return the last position's logits as the model gives them (the "
            "cells after it take the softmax where they need one).",
        ),
        (
            ref.log_softmax(-1),
            "these are log-probabilities, not logits; return the last position's logits as the model gives them.",
        ),
        (
            ref[:1].expand_as(ref),
            "every row is the model's output without a push, so the hook never ran; pass it to the run: "
            "model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)]).",
        ),
    ]
    if last != hook_name:
        hints.append(
            (
                torch.stack([_pushed_logits(model, tokens, last, direction, s) for s in scales]),
                f"you pushed at {last}, the last block's output, not at the hook point the function is given "
                f"({hook_name}); use the argument `hook_name` in fwd_hooks.",
            )
        )
    expect_close(out, ref, name, "logits", atol=1e-3, hints=hints)
    passed(name, f"{len(scales)} runs, each pushed by its own scale at {hook_name}, and no hook left behind")
