"""Every lesson-02 check accepts a correct solution and rejects the stub and a plausible mistake.

The correct solutions here are written another way than the references (loops, indexing,
hook names instead of cache helpers), so a check that merely compared a function with
itself could not pass them all. The residual-stream checks run on two zoo models: one with
learned positions and LayerNorm, one with rotary positions and RMSNorm.
"""

import re

import pytest
import torch

from utils.checks import lesson02_logit_lens as c

# --- correct solutions ---------------------------------------------------------------


def logit_diff_directions(W_U, answers, distractors):
    return torch.stack([W_U[:, a] - W_U[:, d] for a, d in zip(answers.tolist(), distractors.tolist())])


def logit_diff(logits, last, answers, distractors):
    return torch.stack(
        [logits[i, p, a] - logits[i, p, d] for i, (p, a, d) in enumerate(zip(last, answers, distractors))]
    )


def final_norm(x, center, eps):
    if center:
        x = x - x.mean(dim=-1, keepdim=True)
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def project_to_logit_diff(stack, scale, directions):
    return torch.einsum("cbd,bd->cb", stack, directions) / scale[:, 0]


def accumulated_residual(model, cache, last):
    n_layers = sum(1 for k in cache.keys() if re.fullmatch(r"blocks\.\d+\.hook_resid_pre", k))
    names = [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
    return torch.stack([torch.stack([cache[n][i, p] for i, p in enumerate(last.tolist())]) for n in names])


def decomposed_residual(model, cache, last):
    n_layers = sum(1 for k in cache.keys() if re.fullmatch(r"blocks\.\d+\.hook_resid_pre", k))
    names = ["hook_embed"] + (["hook_pos_embed"] if "hook_pos_embed" in cache.keys() else [])
    for l in range(n_layers):
        names.append(f"blocks.{l}.hook_attn_out")
        if f"blocks.{l}.hook_mlp_out" in cache.keys():
            names.append(f"blocks.{l}.hook_mlp_out")
    i = torch.arange(len(last))
    return torch.stack([cache[n][i, last] for n in names])


def head_results(model, cache, layer, last):
    z = cache[f"blocks.{layer}.attn.hook_z"][torch.arange(len(last)), last]  # [batch, head, d_head]
    return torch.einsum("bhe,hed->hbd", z, model.W_O[layer])


def head_attribution(model, cache, last, scale, directions):
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out = torch.zeros(L, H, len(last))
    for l in range(L):
        for h in range(H):
            head = head_results(model, cache, l, last)[h]  # [batch, d_model]
            out[l, h] = torch.einsum("bd,bd->b", head, directions) / scale[:, 0]
    return out


def attention_to_names(pattern, tokens, last, names):
    out = torch.zeros(pattern.shape[0], pattern.shape[1])
    for i in range(pattern.shape[0]):
        for k in range(tokens.shape[1]):
            if tokens[i, k] == names[i]:
                out[i] += pattern[i, :, last[i], k]
    return out


# --- plausible mistakes ------------------------------------------------------------------


def _at_end(fn):
    """The same function, reading the last position of the padded tensor instead of `last`."""

    def wrong(model, cache, *args):
        *rest, last = args
        return fn(model, cache, *rest, torch.full_like(last, cache["blocks.0.hook_resid_pre"].shape[1] - 1))

    return wrong


def _off_by_one(fn):
    """The same function, reading the position before each prompt's last."""

    def wrong(model, cache, *args):
        *rest, last = args
        return fn(model, cache, *rest, last - 1)

    return wrong


def _n_embeds(cache):
    return 2 if "hook_pos_embed" in cache.keys() else 1


def _mlp_first(model, cache, last):
    out = decomposed_residual(model, cache, last)
    k = _n_embeds(cache)
    order = list(range(k)) + [j for i in range(k, out.shape[0], 2) for j in (i + 1, i)]
    return out[order]


def _attention_then_mlps(model, cache, last):
    out = decomposed_residual(model, cache, last)
    k = _n_embeds(cache)
    return out[list(range(k)) + list(range(k, out.shape[0], 2)) + list(range(k + 1, out.shape[0], 2))]


def _attention_without_bias(model, cache, last):
    out = decomposed_residual(model, cache, last).clone()
    k = _n_embeds(cache)
    for l in range(model.cfg.n_layers):
        out[k + 2 * l] = head_results(model, cache, l, last).sum(0)
    return out


def _stages(cache, last, names):
    return torch.stack([cache[n][torch.arange(len(last)), last] for n in names])


def _resid_mid(model, cache, last):
    L = model.cfg.n_layers
    return _stages(cache, last, [f"blocks.{l}.hook_resid_mid" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"])


def _normalised_last_stage(model, cache, last):
    out = accumulated_residual(model, cache, last)
    return torch.cat([out[:-1], _stages(cache, last, ["ln_final.hook_normalized"])])


def _each_stage_normed(model, cache, last):
    x = accumulated_residual(model, cache, last)
    x = x - x.mean(-1, keepdim=True) if model.cfg.normalization_type == "LN" else x
    return x / (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()


def _each_stage_by_final_scale(model, cache, last):
    return accumulated_residual(model, cache, last) / _stages(cache, last, ["ln_final.hook_scale"])[0]


def _values_not_z(model, cache, layer, last):
    v = cache[f"blocks.{layer}.attn.hook_v"][torch.arange(len(last)), last]
    return torch.einsum("bhe,hed->hbd", v, model.W_O[layer])


def _layer_0_weights(model, cache, layer, last):
    z = cache[f"blocks.{layer}.attn.hook_z"][torch.arange(len(last)), last]
    return torch.einsum("bhe,hed->hbd", z, model.W_O[0])


def _summed_then_shared(model, cache, layer, last):
    out = head_results(model, cache, layer, last)
    return out.sum(0, keepdim=True).expand_as(out) / out.shape[0]


def _layer_results(model, cache, last, scale, directions):
    """Each layer's [head, batch] attributions, in a list: the loop's results not yet stacked."""
    return [
        project_to_logit_diff(head_results(model, cache, l, last), scale, directions) for l in range(model.cfg.n_layers)
    ]


def _layers(layers):
    """The loop over `layers` (a function of the number of layers) instead of every layer."""

    def wrong(model, cache, last, scale, directions):
        return torch.stack(
            [
                project_to_logit_diff(head_results(model, cache, l, last), scale, directions)
                for l in layers(model.cfg.n_layers)
            ]
        )

    return wrong


def _joined(model, cache, last, scale, directions):
    return torch.cat(_layer_results(model, cache, last, scale, directions))


def _with_output_bias(model, cache, last, scale, directions):
    return torch.stack(
        [
            project_to_logit_diff(head_results(model, cache, l, last) + model.b_O[l], scale, directions)
            for l in range(model.cfg.n_layers)
        ]
    )


def _lesson_batch(model, cache, last, scale, directions):
    """The lesson's own SCALE and DIRS (100 prompts) where the arguments were meant."""
    return head_attribution(model, cache, last, torch.ones(100, 1), torch.zeros(100, directions.shape[1]))


def _last_occurrence(p, t, last, n):
    return torch.stack([p[i, :, last[i], int((t[i] == n[i]).nonzero()[-1])] for i in range(len(last))])


def _mean_over_queries(p, t, last, n):
    return torch.einsum("bhk,bk->bh", p.mean(2), (t == n[:, None]).float())


def _centred(x, center):
    return x - x.mean(-1, keepdim=True) if center else x


def _l2_norm(x, center, eps):
    return _centred(x, center) / _centred(x, center).norm(dim=-1, keepdim=True)


def _own_norm(stack, scale, directions):
    return torch.einsum("cbd,bd->cb", stack / stack.pow(2).mean(-1, keepdim=True).sqrt(), directions)


CASES = {
    "logit_diff_directions": (
        c.check_logit_diff_directions,
        logit_diff_directions,
        {
            "sign is flipped": lambda W_U, a, d: (W_U[:, d] - W_U[:, a]).T,
            "answer's column alone": lambda W_U, a, d: W_U[:, a].T,
            "dimension 0 (batch)": lambda W_U, a, d: W_U[:, a] - W_U[:, d],
            "length 1": lambda W_U, a, d: torch.nn.functional.normalize((W_U[:, a] - W_U[:, d]).T, dim=-1),
        },
    ),
    "logit_diff": (
        c.check_logit_diff,
        logit_diff,
        {
            "padded on the right": lambda lg, last, a, d: (
                lg[torch.arange(len(a)), -1, a] - lg[torch.arange(len(a)), -1, d]
            ),
            "sign is flipped": lambda lg, last, a, d: -logit_diff(lg, last, a, d),
            "off by one": lambda lg, last, a, d: logit_diff(lg, last - 1, a, d),
            "returned a tensor with 0 dimensions": lambda lg, last, a, d: logit_diff(lg, last, a, d).mean(),
            "difference of probabilities": lambda lg, last, a, d: logit_diff(lg.softmax(-1), last, a, d),
            "softmax over the positions": lambda lg, last, a, d: logit_diff(lg.softmax(1), last, a, d),
        },
    ),
    "final_norm": (
        c.check_final_norm,
        final_norm,
        {
            "subtract each vector's mean": lambda x, center, eps: final_norm(x, True, eps),
            "divide by n - 1": lambda x, center, eps: (
                (x - x.mean(-1, keepdim=True) if center else x)
                / ((x - x.mean(-1, keepdim=True) if center else x).var(-1, keepdim=True) + eps).sqrt()
            ),
            "inside the square root": lambda x, center, eps: final_norm(x, center, 0.0),
            "a sum of squares, the L2 norm": lambda x, center, eps: (
                _centred(x, center) / (_centred(x, center).pow(2).sum(-1, keepdim=True) + eps).sqrt()
            ),
            "the root of the *mean* square plus `eps`": _l2_norm,
            "`eps` squared": lambda x, center, eps: (
                _centred(x, center) / (_centred(x, center).pow(2).mean(-1, keepdim=True) + eps**2).sqrt()
            ),
            "mean over the batch axis": lambda x, center, eps: (
                (x - x.mean(1, keepdim=True) if center else x)
                / ((x - x.mean(1, keepdim=True) if center else x).pow(2).mean(-1, keepdim=True) + eps).sqrt()
            ),
            "before centring": lambda x, center, eps: (
                (x - x.mean(-1, keepdim=True) if center else x) / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
            ),
        },
    ),
    "project_to_logit_diff": (
        c.check_project_to_logit_diff,
        project_to_logit_diff,
        {
            "left out the final layer norm's scale": lambda s, scale, d: torch.einsum("cbd,bd->cb", s, d),
            "do not multiply": lambda s, scale, d: torch.einsum("cbd,bd->cb", s, d) * scale[:, 0],
            "sign is flipped": lambda s, scale, d: -project_to_logit_diff(s, scale, d),
            "its own scale": lambda s, scale, d: torch.einsum("cbd,bd->cb", s, d) / scale.mean(),
            "by its square": lambda s, scale, d: torch.einsum("cbd,bd->cb", s, d) / scale[:, 0] ** 2,
            "by its own size": _own_norm,
            "by its own size; divide": lambda s, scale, d: torch.einsum("cbd,bd->cb", final_norm(s, True, 1e-5), d),
        },
    ),
    "attention_to_names": (
        c.check_attention_to_names,
        attention_to_names,
        {
            "each prompt ends at its own": lambda p, t, last, n: attention_to_names(p, t, torch.full_like(last, 7), n),
            "more than once": lambda p, t, last, n: torch.stack(
                [p[i, :, last[i], int((t[i] == n[i]).nonzero()[0])] for i in range(len(last))]
            ),
            "query and key are swapped": lambda p, t, last, n: attention_to_names(p.transpose(-1, -2), t, last, n),
            "do not average": lambda p, t, last, n: attention_to_names(p, t, last, n) / 2,
            "only the name's last position": _last_occurrence,
            "predicts the name, not `last[i] - 1`": lambda p, t, last, n: attention_to_names(p, t, last - 1, n),
            "averaged the attention over every query": _mean_over_queries,
            "largest attention over the name's positions": lambda p, t, last, n: (
                p[torch.arange(len(last)), :, last] * (t == n[:, None])[:, None, :]
            ).amax(-1),
        },
    ),
}

MODEL_CASES = {
    "accumulated_residual": (
        c.check_accumulated_residual,
        accumulated_residual,
        {
            "right-padded": _at_end(accumulated_residual),
            "use `hook_resid_pre`": lambda model, cache, last: torch.cat(
                [accumulated_residual(model, cache, last)[1:], accumulated_residual(model, cache, last)[-1:]]
            ),
            "dimension 0 (layer)": lambda model, cache, last: accumulated_residual(model, cache, last)[1:],
            "off by one": _off_by_one(accumulated_residual),
            "between a layer's attention and its MLP": _resid_mid,
            "already been through the final norm": _normalised_last_stage,
            "leave the final norm out here": _each_stage_normed,
            "leave the final norm out here (the lens": _each_stage_by_final_scale,
            "`hook_embed` holds the token embeddings alone": lambda model, cache, last: torch.cat(
                [
                    cache["hook_embed"][torch.arange(len(last)), last][None],
                    accumulated_residual(model, cache, last)[1:],
                ]
            ),
        },
    ),
    "decomposed_residual": (
        c.check_decomposed_residual,
        decomposed_residual,
        {
            "right-padded": _at_end(decomposed_residual),
            "this model has": lambda model, cache, last: decomposed_residual(model, cache, last)[1:],
            "before its MLP": _mlp_first,
            "every attention output first": _attention_then_mlps,
            "*plus* the bias `b_O`": _attention_without_bias,
        },
    ),
    "head_attribution": (
        c.check_head_attribution,
        head_attribution,
        {
            "returned a list of the layers' results": _layer_results,
            "torch.cat joins them": _joined,
            "averaged over the prompts": lambda model, cache, last, scale, directions: head_attribution(
                model, cache, last, scale, directions
            ).mean(-1),
            "added up each layer's heads": lambda model, cache, last, scale, directions: head_attribution(
                model, cache, last, scale, directions
            ).sum(1),
            "stops one layer short": _layers(lambda L: range(L - 1)),
            "starts at layer 1": _layers(lambda L: range(1, L)),
            "not layer 0": _layers(lambda L: [0] * L),
            "not the last layer": _layers(lambda L: [L - 1] * L),
            "the sign is flipped": lambda model, cache, last, scale, directions: head_attribution(
                model, cache, last, scale, -directions
            ),
            "left out the frozen final scale": lambda model, cache, last, scale, directions: head_attribution(
                model, cache, last, torch.ones_like(scale), directions
            ),
            "divided by the scale twice": lambda model, cache, last, scale, directions: head_attribution(
                model, cache, last, scale**2, directions
            ),
            "layers and heads are swapped": lambda model, cache, last, scale, directions: head_attribution(
                model, cache, last, scale, directions
            ).transpose(0, 1),
            "[head, layer, batch]; the first axis should be the layer": lambda model, cache, last, scale, directions: (
                head_attribution(model, cache, last, scale, directions).transpose(0, 1)
            ),
            "carries the output bias `b_O`": _with_output_bias,
            "not the lesson's batch.last, SCALE and DIRS": _lesson_batch,
        },
    ),
    "head_results": (
        c.check_head_results,
        head_results,
        {
            "right-padded": _at_end(head_results),
            "it belongs to no head (TransformerLens": lambda model, cache, layer, last: (
                head_results(model, cache, layer, last) + model.b_O[layer]
            ),
            "not a share to each": lambda model, cache, layer, last: (
                head_results(model, cache, layer, last) + model.b_O[layer] / model.cfg.n_heads
            ),
            "`hook_v` holds the values": _values_not_z,
            "not layer 0's": _layer_0_weights,
            "not their sum shared out": _summed_then_shared,
            "reverse order": lambda model, cache, layer, last: head_results(model, cache, layer, last).flip(0),
        },
    ),
}


# Mistakes that need an output bias `b_O` (GPT-2 style attention) or an MLP to be made at all.
BIAS_MISTAKES = (
    "it belongs to no head (TransformerLens",
    "not a share to each",
    "*plus* the bias `b_O`",
    "carries the output bias `b_O`",
)
# A mistake the check can name only where a model has as many heads as layers (else the shape names it).
SQUARE_MISTAKES = ("layers and heads are swapped",)
NON_SQUARE_MISTAKES = ("[head, layer, batch]; the first axis should be the layer",)
# A mistake that needs learned position embeddings (rotary models add none to the stream).
POSITION_MISTAKES = ("`hook_embed` holds the token embeddings alone",)


COMPATIBILITY_MODE = True  # the lesson folds the layer norms into the weights: conftest's `model` does too


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    prove_check(check, solution, wrong)


@pytest.mark.parametrize("exercise", sorted(MODEL_CASES))
def test_model_check_accepts_a_correct_solution_and_rejects_the_stub_and_mistakes(exercise, model, prove_check):
    check, solution, wrong = MODEL_CASES[exercise]
    if not c._has_output_bias(model):  # Llama-style attention has no output bias: its mistakes cannot be made
        wrong = {message: fn for message, fn in wrong.items() if message not in BIAS_MISTAKES}
    if model.cfg.positional_embedding_type == "rotary":  # the embeddings are the whole first stage
        wrong = {message: fn for message, fn in wrong.items() if message not in POSITION_MISTAKES}
    square = model.cfg.n_layers == model.cfg.n_heads
    wrong = {m: fn for m, fn in wrong.items() if m not in (NON_SQUARE_MISTAKES if square else SQUARE_MISTAKES)}
    prove_check(check, solution, wrong, model)


def test_attention_check_accepts_a_vectorised_solution(capsys):
    def vectorised(pattern, tokens, last, names):
        rows = pattern[torch.arange(len(last)), :, last]
        return torch.einsum("bhk,bk->bh", rows, (tokens == names[:, None]).float())

    c.check_attention_to_names(vectorised)
    assert "✓" in capsys.readouterr().out


# --- other correct ways to write them -------------------------------------------------------


def _log_softmax_diff(logits, last, answers, distractors):
    logp = logits.log_softmax(-1)[torch.arange(len(last)), last]
    return logp.gather(-1, answers[:, None])[:, 0] - logp.gather(-1, distractors[:, None])[:, 0]


def _layer_norm(x, center, eps):
    if center:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


VARIANTS = {
    "logit_diff, log-probabilities": (c.check_logit_diff, _log_softmax_diff),
    "final_norm, F.layer_norm": (c.check_final_norm, _layer_norm),
    "project_to_logit_diff, divided last": (
        c.check_project_to_logit_diff,
        lambda stack, scale, directions: (stack * directions).sum(-1) / scale.T,
    ),
}


def _helper_stages(model, cache, last):
    return cache.accumulated_resid(layer=-1, incl_mid=False)[:, torch.arange(len(last)), last]


def _loop_with_normalised_times_scale(model, cache, last):
    L = model.cfg.n_layers
    stages = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    final = cache["ln_final.hook_normalized"] * cache["ln_final.hook_scale"]
    rows = torch.arange(len(last))
    return torch.stack([cache[n][rows, last] for n in stages] + [final[rows, last]])


def _differences(model, cache, last):
    rows = torch.arange(len(last))
    pieces = [cache["hook_embed"]] + ([cache["hook_pos_embed"]] if "hook_pos_embed" in cache.keys() else [])
    for l in range(model.cfg.n_layers):
        pre, mid, post = (cache[f"blocks.{l}.hook_resid_{k}"] for k in ("pre", "mid", "post"))
        pieces += [mid - pre, post - mid]
    return torch.stack([p[rows, last] for p in pieces])


def _loop_over_heads(model, cache, layer, last):
    z = cache[f"blocks.{layer}.attn.hook_z"][torch.arange(len(last)), last]
    return torch.stack([z[:, h] @ model.W_O[layer, h] for h in range(model.cfg.n_heads)])


def _stacked_projections(model, cache, last, scale, directions):
    layers = [
        project_to_logit_diff(head_results(model, cache, l, last), scale, directions) for l in range(model.cfg.n_layers)
    ]
    return torch.stack(layers)


MODEL_VARIANTS = {
    "accumulated_residual, the cache helper": (c.check_accumulated_residual, _helper_stages),
    "accumulated_residual, normalised times scale": (c.check_accumulated_residual, _loop_with_normalised_times_scale),
    "decomposed_residual, differences of the stream": (c.check_decomposed_residual, _differences),
    "head_results, a loop over heads": (c.check_head_results, _loop_over_heads),
    "head_attribution, the layers' projections stacked": (c.check_head_attribution, _stacked_projections),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_check_accepts_a_correct_variant(variant, capsys):
    check, fn = VARIANTS[variant]
    check(fn)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("variant", sorted(MODEL_VARIANTS))
def test_model_check_accepts_a_correct_variant(variant, model, capsys):
    check, fn = MODEL_VARIANTS[variant]
    check(fn, model)
    assert "✓" in capsys.readouterr().out


# --- the lesson's counts or cache where the arguments should be read ----------------------


def _with_the_lessons_counts(model, lesson_cache) -> dict:
    """Each function written with the lesson's model's counts (its `L` and `H`) or its `cache`, not the arguments':
    right on the lesson's model, wrong on SmolLM2 in the lesson's last section."""
    L, H = model.cfg.n_layers, model.cfg.n_heads

    def accumulated(m, cache, last):
        names = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
        return _stages(cache, last, names)

    def decomposed(m, cache, last):
        names = ["hook_embed"] + (["hook_pos_embed"] if "hook_pos_embed" in cache.keys() else [])
        for l in range(L):
            names += [f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_mlp_out"]
        return _stages(cache, last, names)

    def heads(m, cache, layer, last):
        z = cache[f"blocks.{layer}.attn.hook_z"][torch.arange(len(last)), last]
        return torch.stack([z[:, h] @ m.W_O[layer, h] for h in range(H)])

    def attribution(m, cache, last, scale, directions):
        return torch.stack(
            [project_to_logit_diff(head_results(m, cache, l, last), scale, directions) for l in range(L)]
        )

    def lessons_cache(m, cache, last):
        return accumulated_residual(m, lesson_cache, last)

    return {
        "the lesson's `L`": (c.check_accumulated_residual, accumulated),
        "the lesson's `L` (components)": (c.check_decomposed_residual, decomposed),
        "the lesson's `H`": (c.check_head_results, heads),
        "the lesson's `L` (heads)": (c.check_head_attribution, attribution),
        "the lesson's cache": (c.check_accumulated_residual, lessons_cache),
    }


LESSON_COUNT_MISTAKES = (
    "the lesson's `L`",
    "the lesson's `L` (components)",
    "the lesson's `H`",
    "the lesson's `L` (heads)",
    "the lesson's cache",
)


@pytest.mark.parametrize("mistake", LESSON_COUNT_MISTAKES)
def test_model_check_names_a_function_that_reads_the_lessons_model_instead_of_its_arguments(mistake, model):
    lesson_cache, _ = c._fresh_cache(model, c._lesson_batch(model))  # the prompts the check gives on this model
    check, fn = _with_the_lessons_counts(model, lesson_cache)[mistake]
    with pytest.raises(c.CheckFailed, match=r"right on the lesson's model but not on .*`model\.cfg\.n_layers`"):
        check(fn, model)


def test_model_checks_try_a_model_whose_layer_and_head_counts_both_differ(model):
    name, other = c._another_model(model)
    assert other.cfg.n_layers != model.cfg.n_layers and other.cfg.n_heads != model.cfg.n_heads, name
    assert other.cfg.d_mlp, f"{name} should have MLPs, as SmolLM2 has"
