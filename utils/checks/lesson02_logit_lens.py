"""Checks for lesson 02, logit lens and direct logit attribution: ``check_<exercise>(your_function)``.

The residual-stream checks run the model on a fresh batch of transfer prompts and compare
with TransformerLens's own cache helpers (``accumulated_resid``, ``decompose_resid``,
``stack_head_results``), which work on the ``TransformerBridge``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from utils.checks.framework import CheckFailed, call, expect_close, expect_tensor, passed
from utils.corpora.ioi_batch import TransferBatch, transfer_batch
from utils.model_zoo.models import load_model
from utils.seeds import LESSON_02_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


def _distinct_pairs(g: torch.Generator, n: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randint(vocab, (n,), generator=g)
    d = (a + 1 + torch.randint(vocab - 1, (n,), generator=g)) % vocab
    return a, d


# --- the logit difference -------------------------------------------------------------


def _pick(values: torch.Tensor, last: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """values[i, last[i], ids[i]] for every prompt i: [batch]."""
    return values[torch.arange(len(last)), last, ids]


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
        (
            ref / ref.norm(dim=-1, keepdim=True),
            "you scaled each direction to length 1; keep the plain difference of the two columns: "
            "its length is part of the logit difference.",
        ),
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
        (
            _pick(logits.softmax(-1), last, a) - _pick(logits.softmax(-1), last, d),
            "that is a difference of probabilities (a softmax over the vocabulary came first); "
            "subtract the raw logits, before any softmax.",
        ),
        (
            _pick(logits.softmax(1), last, a) - _pick(logits.softmax(1), last, d),
            "a softmax over the positions came first; subtract the raw logits, before any softmax.",
        ),
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
            (
                xc / (xc.pow(2).sum(-1, keepdim=True) + eps).sqrt(),
                "you divided by the vector's length (a sum of squares, the L2 norm); the norm divides by "
                "the root of the *mean* square: `.pow(2).mean(-1)`.",
            ),
            (
                xc / xc.norm(dim=-1, keepdim=True),
                "you divided by the vector's length (the L2 norm); the norm divides by the root of the "
                "*mean* square plus `eps`: `(x.pow(2).mean(-1, keepdim=True) + eps).sqrt()`.",
            ),
        ]
        hints.append(
            (
                xc / (xc.pow(2).mean(-1, keepdim=True) + eps**2).sqrt(),
                "you added `eps` squared inside the root; add `eps` itself: `(x.pow(2).mean(-1) + eps).sqrt()`.",
            )
        )
        if center:
            for dim, axis in ((0, "layer"), (1, "batch")):
                xb = x - x.mean(dim, keepdim=True)
                hints.append(
                    (
                        xb / (xb.pow(2).mean(-1, keepdim=True) + eps).sqrt(),
                        f"you subtracted the mean over the {axis} axis; LayerNorm centres each vector on its "
                        "own mean, over its d_model entries: `x - x.mean(-1, keepdim=True)`.",
                    )
                )
            hints.append(
                (
                    xc / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt(),
                    "you computed the scale before centring: take the root mean square of the centred "
                    "vector, not of `x`.",
                )
            )
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
        ((stack / scale**2 * directions).sum(-1), "you divided by the scale twice (by its square): divide once."),
    ]
    own = (
        "you divided each piece by its own size; divide every piece by its prompt's frozen `scale`, "
        "so that the pieces add up."
    )
    for piece in (stack, stack - stack.mean(-1, keepdim=True)):
        for eps in (0.0, 1e-5):
            hints.append(((piece / (piece.pow(2).mean(-1, keepdim=True) + eps).sqrt() * directions).sum(-1), own))
    expect_close(out, ref, name, "attributions", hints=hints)
    passed(name)


# --- the residual stream, against TransformerLens's cache helpers --------------------


def _lesson_batch(model) -> TransferBatch:
    """A fresh batch of transfer prompts, as the lesson's own (held-out stories), on the model's device."""
    return transfer_batch(model, n=6, seed=LESSON_02_CHECKS).to(next(model.parameters()).device)


def _random_batch(model) -> TransferBatch:
    """Six prompts of random tokens in ``model``'s vocabulary, of four lengths, right-padded, with random answer and
    distractor tokens: enough to compare activations on a model that cannot read Storyworld's names."""
    g = torch.Generator().manual_seed(LESSON_02_CHECKS)
    last = torch.tensor([11, 8, 11, 6, 9, 8])
    tokens = torch.randint(model.cfg.d_vocab, (len(last), int(last.max()) + 1), generator=g)
    answers, distractors = _distinct_pairs(g, len(last), model.cfg.d_vocab)
    batch = TransferBatch(tokens, last, answers, distractors, texts=[""] * len(last))
    return batch.to(next(model.parameters()).device)


def _fresh_cache(model, batch: TransferBatch):
    """The model's cache on ``batch``, and the batch."""
    with torch.no_grad():
        # only the cache is read: the head unembeds the last position alone (the same activations)
        _, cache = model.run_with_cache(batch.tokens, logits_to_keep=1)
    return cache, batch


def _padding_hint(cache, batch, builder, what: str) -> list:
    return [
        (
            builder(torch.full_like(batch.last, batch.tokens.shape[1] - 1)),
            f"you read the last position of the tensor; the prompts are right-padded, so take each "
            f"prompt's {what} at its own `last[i]`.",
        )
    ]


# The lesson's last section calls these functions on SmolLM2 (30 layers × 9 heads), so each check runs the function
# once more on a zoo model whose layer and head counts both differ from the lesson's model: a loop over the lesson's
# `L` or `H`, or a read of its `cache`, passes on the lesson's model and is named here instead of there. That model
# has MLPs, as SmolLM2 has, and reads random tokens (its tokenizer is not Storyworld's).
_OTHER_MODELS = ("countdown-llama-3l", "storyworld-4l")  # 3 layers × 4 heads; 4 layers × 8 heads


@functools.lru_cache(maxsize=2)
def _load_other(name: str, device: str, compatibility_mode: bool):
    other = load_model(name, device=device)
    if compatibility_mode:  # as the lesson runs its own model
        other.enable_compatibility_mode()
    return other


def _another_model(model) -> tuple[str, object]:
    """A zoo model whose layer and head counts both differ from ``model``'s, on its device and in its mode."""
    device = str(next(model.parameters()).device)
    mode = bool(getattr(model, "compatibility_mode", False))
    for other_name in _OTHER_MODELS:
        other = _load_other(other_name, device, mode)
        if other.cfg.n_layers != model.cfg.n_layers and other.cfg.n_heads != model.cfg.n_heads:
            return other_name, other
    raise AssertionError(f"no model in {_OTHER_MODELS} differs from this one in both counts")  # none in the zoo


def _again_on_another_model(check_on: Callable, fn: Callable, model, name: str) -> None:
    other_name, other = _another_model(model)
    L, H = other.cfg.n_layers, other.cfg.n_heads
    try:
        check_on(fn, other, name, _random_batch(other))
    except CheckFailed as e:
        said = str(e).rstrip()
        said += "" if said.endswith(".") else "."
        raise CheckFailed(
            f"`{name}` is right on the lesson's model but not on {other_name} ({L} layers × {H} heads), which the "
            f"check also gives it (the lesson's last section gives it SmolLM2, with 30 layers × 9 heads): {said} "
            "Read everything from the arguments: the layer and head counts from `model.cfg.n_layers` and "
            "`model.cfg.n_heads`, not the lesson's `L` and `H`, and the activations from `cache`."
        ) from None


def check_accumulated_residual(fn: Callable, model) -> None:
    """fn(model, cache, last [batch]) -> [n_layers + 1, batch, d_model] at each prompt's final position."""
    name = _name(fn, "accumulated_residual")
    detail = _accumulated_residual_on(fn, model, name, _lesson_batch(model))
    _again_on_another_model(_accumulated_residual_on, fn, model, name)
    passed(name, detail)


def _accumulated_residual_on(fn: Callable, model, name: str, batch: TransferBatch) -> str:
    """The check on one model: raises CheckFailed, or returns the line the check prints."""
    cache, batch = _fresh_cache(model, batch)
    L, n, d = model.cfg.n_layers, len(batch), model.cfg.d_model
    out = call(
        fn,
        model,
        cache,
        batch.last,
        name=name,
        explain={KeyError: f"Use the hook names `blocks.{{l}}.hook_resid_pre` and `blocks.{L - 1}.hook_resid_post`."},
    )
    out = expect_tensor(out, (L + 1, n, d), ["layer", "batch", "d_model"], name)
    idx = torch.arange(n, device=batch.last.device)
    stages = cache.accumulated_resid(layer=-1, incl_mid=False)  # [stage, batch, position, d_model]

    def build(last):
        return stages[:, idx, last]

    def stack(names):
        return torch.stack([cache[h][idx, batch.last] for h in names])

    ref = build(batch.last)
    hints = _padding_hint(cache, batch, build, "residual stream")
    hints += [
        (
            build(batch.last - 1),
            "off by one: read each prompt's final position `last[i]`, where the next token is predicted, "
            "not `last[i] - 1`.",
        ),
        (
            stack([f"blocks.{l}.hook_resid_post" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]),
            "the first entry is the residual stream before layer 0 (the embeddings): use `hook_resid_pre`.",
        ),
        (
            torch.cat([ref[:-1], cache["ln_final.hook_normalized"][idx, batch.last][None]]),
            f"the last stage is the raw stream after the last layer, `blocks.{L - 1}.hook_resid_post`; "
            "`ln_final.hook_normalized` has already been through the final norm.",
        ),
    ]
    if "hook_pos_embed" in cache:
        hints.append(
            (
                torch.cat([cache["hook_embed"][idx, batch.last][None], ref[1:]]),
                "`hook_embed` holds the token embeddings alone; the stream before layer 0 also holds the "
                "position embeddings: use `blocks.0.hook_resid_pre`.",
            )
        )
    if f"blocks.{L - 1}.hook_resid_mid" in cache:
        hints.append(
            (
                stack([f"blocks.{l}.hook_resid_mid" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]),
                "`hook_resid_mid` is the stream between a layer's attention and its MLP; the stream before "
                "layer l is `blocks.{l}.hook_resid_pre`.",
            )
        )
    centred = ref - ref.mean(-1, keepdim=True) if model.cfg.normalization_type == "LN" else ref
    normed = "return the raw residual stream: leave the final norm out here (the lens applies it in the next step)."
    hints += [
        (cache.accumulated_resid(layer=-1, incl_mid=False, apply_ln=True)[:, idx, batch.last], normed),
        (cache.apply_ln_to_stack(stages, layer=-1)[:, idx, batch.last], normed),
        (centred / (centred.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt(), normed),
        (ref / cache["ln_final.hook_scale"][idx, batch.last], normed),
    ]
    expect_close(out, ref, name, "residual stream", hints=hints)
    return "matches cache.accumulated_resid"


def check_decomposed_residual(fn: Callable, model) -> None:
    """fn(model, cache, last) -> [component, batch, d_model]: embeddings, then each layer's attention and MLP output."""
    name = _name(fn, "decomposed_residual")
    detail = _decomposed_residual_on(fn, model, name, _lesson_batch(model))
    _again_on_another_model(_decomposed_residual_on, fn, model, name)
    passed(name, detail)


def _decomposed_residual_on(fn: Callable, model, name: str, batch: TransferBatch) -> str:
    """The check on one model: raises CheckFailed, or returns the line the check prints."""
    cache, batch = _fresh_cache(model, batch)
    idx = torch.arange(len(batch), device=batch.last.device)
    ref, labels = cache.decompose_resid(layer=-1, mode="all", incl_embeds=True, return_labels=True)
    out = call(fn, model, cache, batch.last, name=name)
    if isinstance(out, torch.Tensor) and out.ndim == 3 and out.shape[0] != len(labels):
        raise CheckFailed(
            f"`{name}` returned {out.shape[0]} components; this model has {len(labels)}: {', '.join(labels)}."
        )
    out = expect_tensor(out, (len(labels), len(batch), model.cfg.d_model), ["component", "batch", "d_model"], name)

    def build(last):
        return ref[:, idx, last]

    hints = _padding_hint(cache, batch, build, "outputs")
    attn = [i for i, label in enumerate(labels) if label.endswith("attn_out")]
    mlps = [i for i, label in enumerate(labels) if label.endswith("mlp_out")]
    embeds = [i for i in range(len(labels)) if i not in attn + mlps]
    if mlps:
        swapped = list(range(len(labels)))
        for a, m in zip(attn, mlps):
            swapped[a], swapped[m] = m, a
        hints += [
            (
                build(batch.last)[swapped],
                "each layer's attention comes before its MLP: order the components as the model adds them.",
            ),
            (
                build(batch.last)[embeds + attn + mlps],
                "you put every attention output first and then every MLP's; order them as the model adds "
                "them: layer 0's attention, layer 0's MLP, then layer 1's attention, and so on.",
            ),
        ]
    if _has_output_bias(model):
        heads_only = build(batch.last).clone()
        for l, a in enumerate(attn):
            heads_only[a] = heads_only[a] - model.b_O[l]
        hints.append(
            (
                heads_only,
                "an attention layer's output is its heads' outputs *plus* the bias `b_O`, which belongs to "
                "no head: read `blocks.{l}.hook_attn_out`.",
            )
        )
    expect_close(out, build(batch.last), name, "components", hints=hints)
    total = out.sum(0) - cache.accumulated_resid(layer=-1, incl_mid=False)[-1, idx, batch.last]
    if total.abs().max() > 1e-3:
        raise CheckFailed(f"`{name}`: the components should add up to the final residual stream.")
    return f"matches cache.decompose_resid ({', '.join(labels)})"


def _has_output_bias(model) -> bool:
    """Whether the attention layers add an output bias ``b_O`` (GPT-2 style) or not (Llama style)."""
    try:
        return model.b_O is not None
    except TypeError:  # the bridge cannot stack biases that do not exist
        return False


def check_head_results(fn: Callable, model) -> None:
    """fn(model, cache, layer, last) -> [head, batch, d_model]: each head's output at each prompt's final position."""
    name = _name(fn, "head_results")
    detail = _head_results_on(fn, model, name, _lesson_batch(model))
    _again_on_another_model(_head_results_on, fn, model, name)
    passed(name, detail)


def _head_results_on(fn: Callable, model, name: str, batch: TransferBatch) -> str:
    """The check on one model: raises CheckFailed, or returns the line the check prints."""
    cache, batch = _fresh_cache(model, batch)
    idx = torch.arange(len(batch), device=batch.last.device)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    stacked = cache.stack_head_results(layer=-1).reshape(L, H, *cache["blocks.0.hook_resid_pre"].shape)
    for layer in sorted({0, L - 1}):
        out = call(fn, model, cache, layer, batch.last, name=name)
        out = expect_tensor(out, (H, len(batch), model.cfg.d_model), ["head", "batch", "d_model"], name)
        ref = stacked[layer][:, idx, batch.last]
        hints = _padding_hint(cache, batch, lambda last, layer=layer: stacked[layer][:, idx, last], "head outputs")
        if _has_output_bias(model):
            b_O = model.b_O[layer]
            hints += [
                (ref + b_O, "leave the output bias `b_O` out: it belongs to no head (TransformerLens keeps it apart)."),
                (ref + b_O / H, "leave the output bias `b_O` out: it belongs to no head, not a share to each."),
            ]
        v = cache[f"blocks.{layer}.attn.hook_v"][idx, batch.last]  # [batch, head or kv head, d_head]
        if v.shape[1] == H:
            hints.append(
                (
                    torch.einsum("bhe,hed->hbd", v, model.W_O[layer]),
                    "`hook_v` holds the values at each position before attention mixes them; what a head "
                    "writes at `last` is `hook_z` there (its attention-weighted sum of values) times `W_O`.",
                )
            )
        if layer != 0:
            z = cache[f"blocks.{layer}.attn.hook_z"][idx, batch.last]
            hints.append(
                (
                    torch.einsum("bhe,hed->hbd", z, model.W_O[0]),
                    "use the output weights of the same layer, `W_O[layer]`, not layer 0's.",
                )
            )
        hints.append((ref.flip(0), "the heads come out in reverse order: entry h should be head h."))
        hints.append(
            (
                ref.mean(0, keepdim=True).expand_as(ref),
                "keep the heads apart: each head's `z` times its own `W_O[layer, h]`, not their sum shared out.",
            )
        )
        expect_close(out, ref, name, f"head outputs in layer {layer}", hints=hints, atol=1e-4)
    return "matches cache.stack_head_results"


def check_head_attribution(fn: Callable, model) -> None:
    """fn(model, cache, last [batch], scale [batch, 1], directions [batch, d_model]) -> [layer, head, batch]: each
    head's direct logit attribution on each prompt, with the frozen final scale.

    The check runs the loop on a fresh batch of transfer prompts, with their own scales and directions, and compares
    it with TransformerLens's ``stack_head_results`` projected the same way.
    """
    name = _name(fn, "head_attribution")
    detail = _head_attribution_on(fn, model, name, _lesson_batch(model))
    _again_on_another_model(_head_attribution_on, fn, model, name)
    passed(name, detail)


def _head_attribution_on(fn: Callable, model, name: str, batch: TransferBatch) -> str:
    """The check on one model: raises CheckFailed, or returns the line the check prints."""
    cache, batch = _fresh_cache(model, batch)
    L, H, n = model.cfg.n_layers, model.cfg.n_heads, len(batch)
    idx = torch.arange(n, device=batch.last.device)
    scale = cache["ln_final.hook_scale"][idx, batch.last]  # [batch, 1]
    directions = (model.W_U[:, batch.answers] - model.W_U[:, batch.distractors]).T  # [batch, d_model]
    heads = cache.stack_head_results(layer=-1)[:, idx, batch.last]  # [layer·head, batch, d_model]
    ref = ((heads / scale) * directions).sum(-1).reshape(L, H, n).cpu()
    own = (
        "If a size differs by the number of prompts: use the arguments `last`, `scale` and `directions`, not the "
        "lesson's batch.last, SCALE and DIRS (the check gives the loop another batch)."
    )
    out = call(fn, model, cache, batch.last, scale, directions, name=name, explain={RuntimeError: own, IndexError: own})
    if isinstance(out, (list, tuple)):
        raise CheckFailed(
            f"`{name}` returned a {type(out).__name__} of the layers' results; return one tensor [layer, head, batch]: "
            "torch.stack the layers' [head, batch] results."
        )
    if isinstance(out, torch.Tensor):
        shape = tuple(out.shape)
        if shape == (L * H, n):
            raise CheckFailed(
                f"`{name}` returned shape {shape}, [layer·head, batch]: the layers' heads are joined in one axis; "
                f"keep layers and heads apart, [layer, head, batch] = {(L, H, n)}: torch.stack the layers' results "
                "(torch.cat joins them)."
            )
        if shape == (L, H) and _close(out, ref.mean(-1)):
            raise CheckFailed(
                f"`{name}` averaged over the prompts; return every prompt's attribution, [layer, head, batch] = "
                f"{(L, H, n)}: the lesson averages it itself, and splits the prompts by the order of the names."
            )
        if shape == (L, n) and _close(out, ref.sum(1)):
            raise CheckFailed(
                f"`{name}` added up each layer's heads; keep each head apart, [layer, head, batch] = {(L, H, n)}: "
                "project each head's output, [head, batch] per layer."
            )
        if shape == (L - 1, H, n) and L > 1:
            for part, message in (
                (ref[:-1], "your loop stops one layer short and leaves out the last layer"),
                (ref[1:], "your loop starts at layer 1 and leaves out layer 0"),
            ):
                if _close(out, part):
                    raise CheckFailed(f"`{name}`: {message}; loop over every layer, range(model.cfg.n_layers).")
        if shape == (H, L, n) and H != L:
            raise CheckFailed(
                f"`{name}` returned shape {shape}, [head, layer, batch]; the first axis should be the layer, "
                f"[layer, head, batch] = {(L, H, n)}."
            )
    out = expect_tensor(out, (L, H, n), ["layer", "head", "batch"], name)
    fixed = (
        "every layer gives the same heads: the loop reads one fixed layer; pass the loop's own layer to head_results"
    )
    hints = [
        (ref[:1].expand_as(ref), fixed + ", head_results(model, cache, l, last), not layer 0."),
        (ref[-1:].expand_as(ref), fixed + ", head_results(model, cache, l, last), not the last layer."),
        (-ref, "the sign is flipped; project on `directions` as given (answer minus distractor)."),
        (
            ref * scale[:, 0].cpu(),
            "you left out the frozen final scale; divide every head's output by its prompt's `scale` "
            "(project_to_logit_diff does).",
        ),
        (
            ref / scale[:, 0].cpu(),
            "you divided by the scale twice; divide each head's output by its prompt's `scale` once.",
        ),
    ]
    if H == L:
        hints.append(
            (ref.transpose(0, 1), "layers and heads are swapped; the first axis is the layer: [layer, head, batch].")
        )
    if _has_output_bias(model):
        b_O = model.b_O  # [layer, d_model]
        bias = ((b_O[:, None, :] / scale) * directions).sum(-1).cpu()  # [layer, batch]
        hints.append(
            (
                ref + bias[:, None, :],
                "each head carries the output bias `b_O`; leave it out: it belongs to no head (head_results has none).",
            )
        )
    expect_close(out, ref, name, "attributions", hints=hints)
    return f"{L} layers × {H} heads on {n} fresh prompts, matches cache.stack_head_results projected"


def _close(out: torch.Tensor, wrong: torch.Tensor) -> bool:
    """Whether the learner's floating-point ``out`` holds the values of the wrong answer ``wrong`` (on the CPU)."""
    if not out.is_floating_point() or out.is_meta or out.is_nested:
        return False
    out = out.to_dense() if out.layout != torch.strided else out
    return torch.allclose(out.detach().float().cpu(), wrong, atol=1e-4, rtol=1e-3)


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
        (
            torch.stack([pattern[i, :, last[i], int((tokens[i] == names[i]).nonzero()[-1])] for i in range(n)]),
            "you kept only the name's last position: a name can occur more than once, so add the attention "
            "to every position that holds it.",
        ),
        (
            _attention_to_names(pattern, tokens, last - 1, names),
            "off by one: read the attention from each prompt's final position `last[i]`, the token that "
            "predicts the name, not `last[i] - 1`.",
        ),
    ]
    holds = (tokens == names[:, None]).to(pattern.dtype)  # [batch, key]
    hints.append(
        (
            (pattern[b, :, last] * holds[:, None, :]).amax(-1),
            "you took the largest attention over the name's positions; add the attention to every position "
            "that holds it.",
        )
    )
    upto = (torch.arange(P)[None, :] <= last[:, None]).to(pattern.dtype)  # [batch, query]: the prompt's queries
    mean_rows = [
        pattern.mean(2),
        (pattern * upto[:, None, :, None]).sum(2) / upto.sum(-1)[:, None, None],
    ]
    for rows in mean_rows:
        hints.append(
            (
                (rows * holds[:, None, :]).sum(-1),
                "you averaged the attention over every query; read only the row of each prompt's final "
                "query `last[i]`, the position that predicts the name.",
            )
        )
    expect_close(out, ref, name, "attention", hints=hints)
    passed(name)
