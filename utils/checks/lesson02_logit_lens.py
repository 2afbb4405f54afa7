"""Checks for lesson 02, logit lens and direct logit attribution: ``check_<exercise>(your_function)``.

The residual-stream checks run the model on a fresh batch of transfer prompts and compare
with TransformerLens's own cache helpers (``accumulated_resid``, ``decompose_resid``,
``stack_head_results``), which work on the ``TransformerBridge``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from utils.checks.framework import CheckFailed, call, expect_close, expect_tensor, passed
from utils.ioi_batch import transfer_batch
from utils.seeds import LESSON_02_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


def _distinct_pairs(g: torch.Generator, n: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randint(vocab, (n,), generator=g)
    d = (a + 1 + torch.randint(vocab - 1, (n,), generator=g)) % vocab
    return a, d


# --- the logit difference -------------------------------------------------------------


def check_logit_diff_directions(fn: Callable) -> None:
    """fn(W_U [d_model, d_vocab], answers [batch], distractors [batch]) -> [batch, d_model]."""
    name = _name(fn, "logit_diff_directions")
    g = torch.Generator().manual_seed(3)
    W_U = torch.randn(16, 30, generator=g)
    a, d = _distinct_pairs(g, 5, 30)
    out = expect_tensor(call(fn, W_U, a, d, name=name), (5, 16), ["batch", "d_model"], name)
    ref = (W_U[:, a] - W_U[:, d]).T
    hints = [
        (-ref, "the sign is flipped: the direction is the answer's column minus the distractor's."),
        (W_U[:, a].T, "that is the answer's column alone: subtract the distractor's column."),
    ]
    expect_close(out, ref, name, "directions", hints=hints)
    passed(name)


def check_logit_diff(fn: Callable) -> None:
    """fn(logits [batch, position, d_vocab], last [batch], answers, distractors) -> [batch]."""
    name = _name(fn, "logit_diff")
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 7, 11, generator=g)
    last = torch.tensor([3, 6, 4, 2, 5])
    a, d = _distinct_pairs(g, 5, 11)
    out = expect_tensor(call(fn, logits, last, a, d, name=name), (5,), ["batch"], name)
    b = torch.arange(5)

    def at(pos):
        return logits[b, pos, a] - logits[b, pos, d]

    hints = [
        (
            at(torch.full((5,), 6)),
            "you read the last position of the tensor; the prompts are padded on the "
            "right, so each one ends at its own `last[i]`.",
        ),
        (-at(last), "the sign is flipped: answer minus distractor, so a correct prediction is positive."),
        (at(last - 1), "off by one: the prediction of the next token sits at `last`, not `last - 1`."),
    ]
    expect_close(out, at(last), name, "logit differences", hints=hints)
    passed(name)


# --- the final layer norm --------------------------------------------------------------


def _final_norm(x: torch.Tensor, center: bool, eps: float) -> torch.Tensor:
    if center:
        x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def check_final_norm(fn: Callable) -> None:
    """fn(x [..., d_model], center, eps) -> the same shape: the folded final norm of each vector."""
    name = _name(fn, "final_norm")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 8, generator=g) * 0.6 + 0.4  # small vectors with a mean: eps and centring matter
    eps = 0.25
    for center in (True, False):
        out = expect_tensor(call(fn, x, center, eps, name=name), x.shape, ["layer", "batch", "d_model"], name)
        xc = x - x.mean(-1, keepdim=True) if center else x
        hints = [
            (
                _final_norm(x, not center, eps),
                f"with center={center} you should {'' if center else 'not '}"
                "subtract each vector's mean first (LayerNorm centres, RMSNorm does not).",
            ),
            (
                xc / (xc.var(-1, keepdim=True) + eps).sqrt(),
                "`var`/`std` divide by n - 1 by default; the norm divides by n: use `.pow(2).mean(-1)`.",
            ),
            (xc / xc.pow(2).mean(-1, keepdim=True).sqrt(), "add `eps` inside the square root."),
            (xc / (xc.pow(2).mean(-1, keepdim=True).sqrt() + eps), "add `eps` inside the square root, not after it."),
            (xc / (xc.pow(2).mean(-1, keepdim=True) + eps), "divide by the square root of the mean square."),
        ]
        expect_close(out, _final_norm(x, center, eps), name, f"normalised vectors (center={center})", hints=hints)
    passed(name)


def check_project_to_logit_diff(fn: Callable) -> None:
    """fn(stack [component, batch, d_model], scale [batch, 1], directions [batch, d_model]) -> [component, batch]."""
    name = _name(fn, "project_to_logit_diff")
    g = torch.Generator().manual_seed(6)
    stack = torch.randn(4, 5, 16, generator=g)
    scale = torch.rand(5, 1, generator=g) * 3 + 0.5
    directions = torch.randn(5, 16, generator=g)
    out = expect_tensor(call(fn, stack, scale, directions, name=name), (4, 5), ["component", "batch"], name)
    ref = ((stack / scale) * directions).sum(-1)
    hints = [
        (
            (stack * directions).sum(-1),
            "you left out the final layer norm's scale: divide every component "
            "by the same frozen `scale` before projecting.",
        ),
        ((stack * scale * directions).sum(-1), "divide by the scale, do not multiply by it."),
        (-ref, "the sign is flipped: project on answer minus distractor as given."),
        (
            ((stack / scale.mean()) * directions).sum(-1),
            "each prompt has its own scale: divide prompt i by `scale[i]`, not by their mean.",
        ),
    ]
    expect_close(out, ref, name, "attributions", hints=hints)
    passed(name)


# --- the residual stream, against TransformerLens's cache helpers --------------------


def _fresh_cache(model, n: int = 6):
    """A cache of a fresh batch of transfer prompts, and the batch (on the model's device)."""
    device = next(model.parameters()).device
    batch = transfer_batch(model, n=n, seed=LESSON_02_CHECKS).to(device)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens)
    return cache, batch


def _padding_hint(cache, batch, builder, what: str) -> list:
    return [
        (
            builder(torch.full_like(batch.last, batch.tokens.shape[1] - 1)),
            f"you read the last position of the tensor; the prompts are right-padded, so take each "
            f"prompt's {what} at its own `last[i]`.",
        )
    ]


def check_accumulated_residual(fn: Callable, model) -> None:
    """fn(cache, last [batch]) -> [n_layers + 1, batch, d_model] at each prompt's final position."""
    name = _name(fn, "accumulated_residual")
    cache, batch = _fresh_cache(model)
    L, n, d = model.cfg.n_layers, len(batch), model.cfg.d_model
    out = call(
        fn,
        cache,
        batch.last,
        name=name,
        explain={KeyError: f"Use the hook names `blocks.{{l}}.hook_resid_pre` and `blocks.{L - 1}.hook_resid_post`."},
    )
    out = expect_tensor(out, (L + 1, n, d), ["layer", "batch", "d_model"], name)
    idx = torch.arange(n, device=batch.last.device)

    def build(last):
        return cache.accumulated_resid(layer=-1, incl_mid=False)[:, idx, last]

    hints = _padding_hint(cache, batch, build, "residual stream")
    hints.append(
        (
            torch.stack(
                [cache[f"blocks.{l}.hook_resid_post"][idx, batch.last] for l in range(L)]
                + [cache[f"blocks.{L - 1}.hook_resid_post"][idx, batch.last]]
            ),
            "the first entry is the residual stream before layer 0 (the embeddings): use `hook_resid_pre`.",
        )
    )
    expect_close(out, build(batch.last), name, "residual stream", hints=hints)
    passed(name, "matches cache.accumulated_resid")


def check_decomposed_residual(fn: Callable, model) -> None:
    """fn(cache, last) -> [component, batch, d_model]: embeddings, then each layer's attention and MLP output."""
    name = _name(fn, "decomposed_residual")
    cache, batch = _fresh_cache(model)
    idx = torch.arange(len(batch), device=batch.last.device)
    ref, labels = cache.decompose_resid(layer=-1, mode="all", incl_embeds=True, return_labels=True)
    out = call(fn, cache, batch.last, name=name)
    if isinstance(out, torch.Tensor) and out.ndim == 3 and out.shape[0] != len(labels):
        raise CheckFailed(
            f"`{name}` returned {out.shape[0]} components; this model has {len(labels)}: {', '.join(labels)}."
        )
    out = expect_tensor(out, (len(labels), len(batch), model.cfg.d_model), ["component", "batch", "d_model"], name)

    def build(last):
        return ref[:, idx, last]

    hints = _padding_hint(cache, batch, build, "outputs")
    if not model.cfg.attn_only:
        swapped = list(range(len(labels)))
        first = labels.index("0_attn_out")
        for i in range(first, len(labels) - 1, 2):
            swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        hints.append(
            (
                build(batch.last)[swapped],
                "each layer's attention comes before its MLP: order the components as the model adds them.",
            )
        )
    expect_close(out, build(batch.last), name, "components", hints=hints)
    total = out.sum(0) - cache.accumulated_resid(layer=-1, incl_mid=False)[-1, idx, batch.last]
    if total.abs().max() > 1e-3:
        raise CheckFailed(f"`{name}`: the components should add up to the final residual stream.")
    passed(name, f"matches cache.decompose_resid ({', '.join(labels)})")


def _has_output_bias(model) -> bool:
    """Whether the attention layers add an output bias ``b_O`` (GPT-2 style) or not (Llama style)."""
    try:
        return model.b_O is not None
    except TypeError:  # the bridge cannot stack biases that do not exist
        return False


def check_head_results(fn: Callable, model) -> None:
    """fn(cache, layer, last) -> [head, batch, d_model]: each head's output at each prompt's final position."""
    name = _name(fn, "head_results")
    cache, batch = _fresh_cache(model)
    idx = torch.arange(len(batch), device=batch.last.device)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    stacked = cache.stack_head_results(layer=-1).reshape(L, H, *cache["blocks.0.hook_resid_pre"].shape)
    for layer in sorted({0, L - 1}):
        out = call(fn, cache, layer, batch.last, name=name)
        out = expect_tensor(out, (H, len(batch), model.cfg.d_model), ["head", "batch", "d_model"], name)
        ref = stacked[layer][:, idx, batch.last]
        hints = _padding_hint(cache, batch, lambda last, layer=layer: stacked[layer][:, idx, last], "head outputs")
        if _has_output_bias(model):
            b_O = model.b_O[layer]
            hints += [
                (ref + b_O, "leave the output bias `b_O` out: it belongs to no head (TransformerLens keeps it apart)."),
                (ref + b_O / H, "leave the output bias `b_O` out: it belongs to no head, not a share to each."),
            ]
        expect_close(out, ref, name, f"head outputs in layer {layer}", hints=hints, atol=1e-4)
    passed(name, "matches cache.stack_head_results")


# --- attention to the names ------------------------------------------------------------


def _attention_to_names(pattern, tokens, last, names):
    b = torch.arange(len(last))
    rows = pattern[b, :, last]  # [batch, head, key]
    return (rows * (tokens == names[:, None])[:, None, :]).sum(-1)


def check_attention_to_names(fn: Callable) -> None:
    """fn(pattern [batch, head, query, key], tokens [batch, position], last [batch], names [batch]) -> [batch, head]."""
    name = _name(fn, "attention_to_names")
    g = torch.Generator().manual_seed(8)
    n, H, P = 4, 3, 8
    scores = torch.randn(n, H, P, P, generator=g) * 2
    pattern = scores.masked_fill(torch.ones(P, P, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    tokens = torch.tensor(
        [[0, 5, 6, 7, 6, 9, 0, 0], [0, 6, 5, 8, 5, 9, 3, 0], [0, 5, 6, 5, 8, 9, 3, 0], [0, 7, 6, 9, 6, 5, 8, 3]]
    )
    last = torch.tensor([5, 6, 6, 7])
    names = torch.tensor([6, 5, 5, 6])  # each occurs twice in its prompt
    out = expect_tensor(call(fn, pattern, tokens, last, names, name=name), (n, H), ["batch", "head"], name)
    ref = _attention_to_names(pattern, tokens, last, names)
    b = torch.arange(n)
    first = torch.stack([pattern[i, :, last[i], int((tokens[i] == names[i]).nonzero()[0])] for i in range(n)])
    hints = [
        (
            _attention_to_names(pattern, tokens, torch.full_like(last, P - 1), names),
            "you read the attention from the last position of the tensor; each prompt ends at its own `last[i]`.",
        ),
        (first, "a name can occur more than once: add the attention to every position that holds it."),
        (
            (pattern.transpose(-1, -2)[b, :, last] * (tokens == names[:, None])[:, None, :]).sum(-1),
            "query and key are swapped: read the row of the final position (it attends), "
            "over the columns of the name's positions (they are attended to).",
        ),
        (
            ref / (tokens == names[:, None]).sum(-1, keepdim=True),
            "add the attention over the name's positions; do not average it.",
        ),
    ]
    expect_close(out, ref, name, "attention", hints=hints)
    passed(name)
