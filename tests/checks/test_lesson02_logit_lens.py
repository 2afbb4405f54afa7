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


def accumulated_residual(cache, last):
    n_layers = sum(1 for k in cache.keys() if re.fullmatch(r"blocks\.\d+\.hook_resid_pre", k))
    names = [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
    return torch.stack([torch.stack([cache[n][i, p] for i, p in enumerate(last.tolist())]) for n in names])


def decomposed_residual(cache, last):
    n_layers = sum(1 for k in cache.keys() if re.fullmatch(r"blocks\.\d+\.hook_resid_pre", k))
    names = ["hook_embed"] + (["hook_pos_embed"] if "hook_pos_embed" in cache.keys() else [])
    for l in range(n_layers):
        names.append(f"blocks.{l}.hook_attn_out")
        if f"blocks.{l}.hook_mlp_out" in cache.keys():
            names.append(f"blocks.{l}.hook_mlp_out")
    i = torch.arange(len(last))
    return torch.stack([cache[n][i, last] for n in names])


def head_results(cache, layer, last, W_O=None):
    z = cache[f"blocks.{layer}.attn.hook_z"][torch.arange(len(last)), last]  # [batch, head, d_head]
    return torch.einsum("bhe,hed->hbd", z, MODEL_W_O[0][layer])


MODEL_W_O = []  # set by the fixture: the model's W_O, which the notebook's solution reads from `model`


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

    def wrong(cache, *args):
        *rest, last = args
        return fn(cache, *rest, torch.full_like(last, cache["blocks.0.hook_resid_pre"].shape[1] - 1))

    return wrong


def _mlp_first(cache, last):
    out = decomposed_residual(cache, last)
    k = 2 if "hook_pos_embed" in cache.keys() else 1
    order = list(range(k)) + [j for i in range(k, out.shape[0], 2) for j in (i + 1, i)]
    return out[order]


CASES = {
    "logit_diff_directions": (
        c.check_logit_diff_directions,
        logit_diff_directions,
        {
            "sign is flipped": lambda W_U, a, d: (W_U[:, d] - W_U[:, a]).T,
            "answer's column alone": lambda W_U, a, d: W_U[:, a].T,
            "dimension 0 (batch)": lambda W_U, a, d: W_U[:, a] - W_U[:, d],
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
        },
    ),
}

MODEL_CASES = {
    "accumulated_residual": (
        c.check_accumulated_residual,
        accumulated_residual,
        {
            "right-padded": _at_end(accumulated_residual),
            "use `hook_resid_pre`": lambda cache, last: torch.cat(
                [accumulated_residual(cache, last)[1:], accumulated_residual(cache, last)[-1:]]
            ),
            "dimension 0 (layer)": lambda cache, last: accumulated_residual(cache, last)[1:],
        },
    ),
    "decomposed_residual": (
        c.check_decomposed_residual,
        decomposed_residual,
        {
            "right-padded": _at_end(decomposed_residual),
            "this model has": lambda cache, last: decomposed_residual(cache, last)[1:],
            "before its MLP": _mlp_first,
        },
    ),
    "head_results": (
        c.check_head_results,
        head_results,
        {
            "right-padded": _at_end(head_results),
            "it belongs to no head (TransformerLens": lambda cache, layer, last: (
                head_results(cache, layer, last) + MODEL_W_O[1][layer]
            ),
            "not a share to each": lambda cache, layer, last: (
                head_results(cache, layer, last) + MODEL_W_O[1][layer] / MODEL_W_O[0].shape[1]
            ),
        },
    ),
}


@pytest.fixture(scope="module", params=["storyworld-4l", "storyworld-llama"])
def model(request):
    from utils import load_model

    m = load_model(request.param, device="cpu")
    m.enable_compatibility_mode()
    MODEL_W_O[:] = [m.W_O.detach(), m.b_O.detach() if c._has_output_bias(m) else None]
    with torch.no_grad():
        yield m


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    prove_check(check, solution, wrong)


@pytest.mark.parametrize("exercise", sorted(MODEL_CASES))
def test_model_check_accepts_a_correct_solution_and_rejects_the_stub_and_mistakes(exercise, model, prove_check):
    check, solution, wrong = MODEL_CASES[exercise]
    if MODEL_W_O[1] is None:  # Llama-style attention has no output bias: its mistakes cannot be made
        bias_mistakes = ("it belongs to no head (TransformerLens", "not a share to each")
        wrong = {message: fn for message, fn in wrong.items() if message not in bias_mistakes}
    prove_check(check, solution, wrong, model)


def test_attention_check_accepts_a_vectorised_solution(capsys):
    def vectorised(pattern, tokens, last, names):
        rows = pattern[torch.arange(len(last)), :, last]
        return torch.einsum("bhk,bk->bh", rows, (tokens == names[:, None]).float())

    c.check_attention_to_names(vectorised)
    assert "✓" in capsys.readouterr().out
