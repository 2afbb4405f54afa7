"""Checks for the appendix: the course's measurements through nnsight.

Each check runs your function on the nnsight twin of ``model`` (the same weights, loaded through
nnsight) and compares what it returns with the same measurement made through the course's own
``TransformerBridge`` hooks on ``model``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from utils import seeds
from utils.checks.framework import CheckFailed, call, expect_close, expect_tensor, passed
from utils.corpora.ioi_batch import transfer_batch
from utils.corpora.ioi_pairs import patching_pairs
from utils.interventions import steering
from utils.interventions.sweeps import patch_sweep

_TWINS: dict[str, object] = {}


def _twin(model):
    """The nnsight twin of ``model``, loaded once per model."""
    from utils.model_zoo.nnsight_model import nnsight_twin

    key = model.cfg.model_name
    if key not in _TWINS:
        _TWINS.clear()  # one twin at a time
        _TWINS[key] = nnsight_twin(model)
    return _TWINS[key]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


def check_nnsight_logit_diff(fn: Callable, model) -> None:
    """fn(lm, tokens [batch, position], last [batch], answers [batch], distractors [batch]) -> [batch]."""
    name = _name(fn, "nnsight_logit_diff")
    lm = _twin(model)
    batch = transfer_batch(model, 8, seeds.LESSON_A1_CHECKS).to(_device(model))
    if len(set(batch.last.tolist())) < 2:
        raise RuntimeError("the check's prompts should differ in length")  # else reading [:, -1] would pass
    out = call(fn, lm, batch.tokens, batch.last, batch.answers, batch.distractors, name=name)
    out = expect_tensor(out, (len(batch.last),), ["batch"], name)
    logits = model(batch.tokens)
    rows = torch.arange(len(batch.last), device=logits.device)

    def at(last):
        return logits[rows, last, batch.answers] - logits[rows, last, batch.distractors]

    hints = [
        (
            at(torch.full_like(batch.last, batch.tokens.shape[1] - 1)),
            "you read the last position of the tensor; the prompts are padded on the right, so each one "
            "ends at its own `last[i]`.",
        ),
        (-at(batch.last), "the sign is flipped: the answer's logit minus the distractor's."),
    ]
    expect_close(out, at(batch.last), name, "logit differences", atol=1e-3, hints=hints)
    passed(name, "your logit differences through nnsight equal the bridge's")


def _patched_by_bridge(model, layer: int, clean, corrupted, position: int, into: str = "corrupted"):
    """Logits of one run with block ``layer``'s output at ``position`` taken from the other run."""
    hook = f"blocks.{layer}.hook_resid_post"
    source, target = (clean, corrupted) if into == "corrupted" else (corrupted, clean)
    # only the cache is read: the head unembeds the last position alone (the same activations)
    _, cache = model.run_with_cache(source, names_filter=hook, logits_to_keep=1)

    def patch(act, hook):
        act = act.clone()
        act[:, position] = cache[hook.name][:, position]
        return act

    return model.run_with_hooks(target, fwd_hooks=[(hook, patch)])


def check_nnsight_patch(fn: Callable, model) -> None:
    """fn(lm, layer, clean [batch, position], corrupted [batch, position], position) -> logits
    [batch, position, d_vocab] of the corrupted run, block ``layer``'s output at ``position`` from the clean run."""
    name = _name(fn, "nnsight_patch")
    lm = _twin(model)
    pairs = patching_pairs(model, 6, seeds.LESSON_A1_CHECKS).to(_device(model))
    layer = min(1, model.cfg.n_layers - 1)
    position = pairs.labels.index("S2")  # the subject's second mention
    out = call(fn, lm, layer, pairs.clean, pairs.corrupted, position, name=name)
    shape = (*pairs.corrupted.shape, model.cfg.d_vocab)
    out = expect_tensor(out, shape, ["batch", "position", "d_vocab"], name)
    ref = _patched_by_bridge(model, layer, pairs.clean, pairs.corrupted, position)
    hints = [
        (model(pairs.clean), "those are the clean run's logits: patch one position of the corrupted run."),
        (model(pairs.corrupted), "those are the corrupted run's own logits: nothing was patched in."),
        (
            _patched_by_bridge(model, layer, pairs.clean, pairs.corrupted, position, into="clean"),
            "the direction is reversed: run the clean prompts first and save, then write the saved values into "
            "the corrupted run.",
        ),
    ]
    if layer > 0:
        hints.append(
            (
                _patched_by_bridge(model, layer - 1, pairs.clean, pairs.corrupted, position),
                "that patched the block before: take block `layer`'s output.",
            )
        )
    expect_close(out, ref, name, "patched logits", atol=1e-3, hints=hints)
    passed(name, "your patch through nnsight moves the logits as the bridge's hook does")


def _swept_by_bridge(model, source, target, metric) -> torch.Tensor:
    """[layer, position]: ``metric`` of the ``target`` run with block ``layer``'s output at one position taken
    from the ``source`` run, one batched pass per layer through the bridge's hooks."""
    n_pos = target.shape[1]
    _, cache = model.run_with_cache(
        source, names_filter=lambda hook: hook.endswith("hook_resid_post"), logits_to_keep=1
    )
    one_each = torch.eye(n_pos, dtype=torch.bool)  # patch j: position j only
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    return torch.stack([patch_sweep(model, target, hook, cache[hook], one_each, metric) for hook in hooks])


def check_nnsight_patch_sweep(fn: Callable, model) -> None:
    """fn(lm, clean [batch, position], corrupted [batch, position], metric) -> [layer, position]: ``metric`` of
    the corrupted run's logits with block ``layer``'s output at ``position`` from the clean run."""
    name = _name(fn, "nnsight_patch_sweep")
    lm = _twin(model)
    pairs = patching_pairs(model, 4, seeds.LESSON_A1_CHECKS).to(_device(model))
    cut = max(pairs.labels.index("IO"), pairs.labels.index("S1")) + 2  # to the word after both names: a short sweep
    cut += cut == model.cfg.n_layers  # never as many positions as layers, so that a transposed answer is caught
    clean, corrupted = pairs.clean[:, :cut], pairs.corrupted[:, :cut]
    rows = torch.arange(len(pairs), device=clean.device)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        """The mean logit difference, the answer's name minus the other, at the final position."""
        return (logits[rows, -1, pairs.answers] - logits[rows, -1, pairs.distractors]).mean()

    n_layers = model.cfg.n_layers
    shape = (n_layers, cut)
    out = call(fn, lm, clean, corrupted, metric, name=name)
    if isinstance(out, torch.Tensor) and tuple(out.shape) == shape[::-1]:
        raise CheckFailed(
            f"`{name}` returned shape {tuple(out.shape)}, which is [position, layer]; the rows should be the "
            f"layers: return [layer, position] = {shape} (loop over the layers outside, or transpose)."
        )
    out = expect_tensor(out, shape, ["layer", "position"], name)
    ref = _swept_by_bridge(model, clean, corrupted, metric)
    last_position, last_layer = ref.clone(), ref.clone()
    last_position[:, -1], last_layer[-1] = 0, 0
    if min(ref[:, -1].abs().max(), ref[-1].abs().max()) < 1e-2 or (ref[0] - ref[-1]).abs().max() < 1e-2:
        raise RuntimeError("the check's sweep should tell its known mistakes apart")
    hints = [
        (
            last_position,
            "the final position's column is all zeros: the sweep stopped one position short; loop over "
            "range(clean.shape[1]), every position including the last.",
        ),
        (
            last_layer,
            "the last block's row is all zeros: the sweep stopped one block short; loop over range(len(blocks(lm))), "
            "every block including the last.",
        ),
        (
            _swept_by_bridge(model, corrupted, clean, metric),
            "each patch put the corrupted run's stream into the clean run; pass the clean prompts first: "
            "nnsight_patch(lm, layer, clean, corrupted, position).",
        ),
    ]
    hints += [
        (
            ref[layer].expand_as(ref),
            f"every row is block {layer}'s patch; pass the loop's layer to nnsight_patch, so that row `layer` "
            "patches block `layer`.",
        )
        for layer in range(n_layers)
    ]
    expect_close(out, ref, name, "patching scores", atol=1e-3, hints=hints)
    passed(name, "your sweep through nnsight gives the bridge's score at every block and position")


def _steered_by_bridge(model, layer: int, tokens, vector, start: int, stop: int | None):
    def add(act, hook):
        act = act.clone()
        act[:, start:stop] += vector
        return act

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", add)])


def check_nnsight_steer(fn: Callable, model) -> None:
    """fn(lm, layer, tokens [batch, position], vector [d_model], start, stop) -> logits [batch, position,
    d_vocab] with ``vector`` added to block ``layer``'s output at positions ``start:stop``."""
    name = _name(fn, "nnsight_steer")
    lm = _twin(model)
    prompt = steering.story_prompts(1, seeds.LESSON_A1_CHECKS, named=False)
    tokens = torch.tensor(steering.prompt_tokens(model, prompt), device=_device(model))  # [1, n]
    n = tokens.shape[1]
    layer = model.cfg.n_layers - 1
    g = torch.Generator().manual_seed(21)
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_post", logits_to_keep=1)
    size = cache[f"blocks.{layer}.hook_resid_post"][0, 1:].norm(dim=-1).mean()
    vector = torch.randn(model.cfg.d_model, generator=g).to(size.device) * size / model.cfg.d_model**0.5
    out = call(fn, lm, layer, tokens, vector.clone(), 1, n, name=name)
    out = expect_tensor(out, (1, n, model.cfg.d_vocab), ["batch", "position", "d_vocab"], name)
    ref = _steered_by_bridge(model, layer, tokens, vector, 1, n)
    if torch.allclose(ref, model(tokens), atol=1e-3):
        raise CheckFailed("the check's vector should move the logits")  # else no hint could tell the cases apart
    hints = [
        (model(tokens), "the logits did not move: add the vector to the block's output inside the trace."),
        (_steered_by_bridge(model, layer, tokens, -vector, 1, n), "the vector was subtracted: add it."),
        (_steered_by_bridge(model, layer, tokens, vector, 0, n), "that added it at BOS too: only `start:stop`."),
    ]
    if layer > 0:
        hints.append(
            (
                _steered_by_bridge(model, layer - 1, tokens, vector, 1, n),
                "that added it after the block before: add it to block `layer`'s output.",
            )
        )
    expect_close(out, ref, name, "steered logits", atol=1e-3, hints=hints)
    passed(name, "your steering through nnsight equals the bridge's hook")
