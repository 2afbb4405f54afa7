"""Checks for lesson 00, orientation: ``check_<exercise>(your_function)``."""

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
)


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
            first = model.to_string(logits[0].argmax())
            if out == first:
                raise CheckFailed(
                    f"`{name}`: you read the prediction at the first position; the next token after "
                    f"the whole text is predicted at the last position (logits[0, -1])."
                )
            raise CheckFailed(f"`{name}`({text!r}) gave {out!r}; the model's top prediction is {want!r}.")
    passed(name, "on " + ", ".join(repr(p[-12:]) for p in ORIENTATION_PROMPTS))


def check_mean_loss(fn: Callable) -> None:
    """fn(logits [batch, pos, vocab], tokens [batch, pos]) -> mean next-token loss (a scalar)."""
    name = getattr(fn, "__name__", "mean_loss")
    g = torch.Generator().manual_seed(11)
    logits, tokens = torch.randn(3, 8, 13, generator=g), torch.randint(0, 13, (3, 8), generator=g)
    out = call(fn, logits, tokens, name=name)
    if isinstance(out, torch.Tensor) and out.numel() != 1:
        raise CheckFailed(
            f"`{name}` returned shape {tuple(out.shape)}; average over every prediction to get one number."
        )
    ref = mean_loss(logits, tokens).item()
    lp = logits.log_softmax(-1)
    wrong = {
        -lp.gather(-1, tokens[..., None]).mean().item(): "no shift: the logits at position t predict token t+1 "
        "(use logits[:, :-1] with tokens[:, 1:]).",
        -logits[:, :-1].gather(-1, tokens[:, 1:, None]).mean().item(): "apply log_softmax to the logits first.",
        per_token_loss(logits, tokens).sum().item(): "take the mean over predictions, not the sum.",
    }
    got = as_number(out)
    for value, message in wrong.items():
        if math.isfinite(got) and abs(got - value) < 1e-4:
            raise CheckFailed(f"`{name}`: {message}")
    expect_number(out, ref, name, "the loss", 1e-4)
    passed(name)


def check_logits_from_residual(fn: Callable, model) -> None:
    """fn(model, resid [batch, pos, d_model]) -> logits [batch, pos, d_vocab], as the model computes them."""
    name = getattr(fn, "__name__", "logits_from_residual")
    tokens = model.to_tokens(ORIENTATION_PROMPTS[0])
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n == last)
    resid = cache[last]
    out = call(fn, model, resid, name=name)
    out = expect_tensor(out, logits.shape, ["batch", "position", "d_vocab"], name)
    with torch.no_grad():
        skipped = resid @ model.W_U + model.b_U
    expect_close(
        out,
        logits,
        name,
        "logits",
        atol=1e-3,
        hints=[(skipped, "apply the final LayerNorm (model.ln_final) before multiplying by W_U.")],
    )
    passed(name, "your logits equal the model's")


def check_boost_hook(fn: Callable) -> None:
    """fn(resid, hook, direction, scale) -> resid with scale * direction added at the last position only."""
    name = getattr(fn, "__name__", "boost_hook")
    g = torch.Generator().manual_seed(12)
    resid, direction = torch.randn(2, 5, 8, generator=g), torch.randn(8, generator=g)
    out = call(fn, resid, SimpleNamespace(name="blocks.3.hook_resid_post"), direction, 2.5, name=name)
    if out is None:
        raise CheckFailed(f"`{name}` returned None: a hook's return value replaces the activation, so return it.")
    out = expect_tensor(out, resid.shape, ["batch", "position", "d_model"], name)
    ref = resid.clone()
    ref[:, -1] += 2.5 * direction
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
                resid.clone().index_add_(1, torch.tensor([4]), direction.expand(2, 1, 8)),
                "multiply the direction by `scale`.",
            ),
        ],
    )
    passed(name)
