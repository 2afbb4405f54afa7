"""Lesson-00 checks reject plausible mistakes with a sentence that names them."""

import functools
import re

import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson00_orientation as c
from utils.checks.framework import two_steps


@pytest.fixture(scope="module")
def model():
    from utils import load_model

    torch.set_grad_enabled(False)
    yield load_model("storyworld-4l", device="cpu")
    torch.set_grad_enabled(True)


def test_top_prediction_accepts_a_softmax_first(model, capsys):
    c.check_top_prediction(lambda m, t: m.to_string(m(m.to_tokens(t)).softmax(-1)[0, -1].argmax()), model)
    out = capsys.readouterr().out
    assert "✓" in out
    assert "'…park. Ann felt'" in out and "'Bob felt'" in out, "the pass line shows whole words"


def test_top_prediction_accepts_the_tokenizer_with_its_start_token(model, capsys):
    def by_tokenizer(m, t):
        ids = torch.tensor([m.tokenizer(t)["input_ids"]])  # the course tokenizer puts <|endoftext|> first
        return m.to_string(m(ids)[0, -1].argmax())

    c.check_top_prediction(by_tokenizer, model)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong,message",
    [
        (lambda m, t: m(m.to_tokens(t))[0, -1].argmax(), "token id"),
        (lambda m, t: m.to_string(m(m.to_tokens(t))[0, -2].argmax()), "logits[0, -2]"),
        (lambda m, t: m.to_string(m(m.to_tokens(t))[0, 0].argmax()), "first position"),
        (lambda m, t: m.to_string(m(m.to_tokens(t)).softmax(1)[0, -1].argmax()), "softmax over positions"),
        (lambda m, t: m.to_string(m(m.to_tokens(t)).softmax(0)[0, -1].argmax()), "batch dimension"),
        (lambda m, t: m.to_string(m(m.to_tokens(t, prepend_bos=False))[0, -1].argmax()), "start token"),
        (lambda m, t: " Zoe", "top prediction is"),
    ],
    ids=[
        "token-id",
        "second-to-last",
        "first-position",
        "softmax-positions",
        "softmax-batch",
        "no-start-token",
        "other",
    ],
)
def test_top_prediction_mistakes(model, wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        c.check_top_prediction(wrong, model)


def _shifted(l, t):
    return l[:, :-1].log_softmax(-1).gather(-1, t[:, 1:, None])[..., 0]


@pytest.mark.parametrize(
    "wrong,message",
    [
        (lambda l, t: -l.log_softmax(-1).gather(-1, t[..., None]).mean(), "no shift"),
        (lambda l, t: -l[:, 1:].log_softmax(-1).gather(-1, t[:, :-1, None]).mean(), "shift goes the wrong way"),
        (lambda l, t: -l[:, :-1].gather(-1, t[:, 1:, None]).mean(), "log_softmax"),
        (lambda l, t: -l[:, :-1].log_softmax(1).gather(-1, t[:, 1:, None]).mean(), "normalised over positions"),
        (lambda l, t: -l.log_softmax(1)[:, :-1].gather(-1, t[:, 1:, None]).mean(), "normalised over positions"),
        (lambda l, t: _shifted(l, t).mean(), "minus sign"),
        (lambda l, t: -l[:, :-1].log_softmax(-1).mean(), "every vocabulary entry"),
        (lambda l, t: -_shifted(l, t).sum(), "not the sum"),
        (lambda l, t: -_shifted(l, t).sum(1).mean(), "summed over positions, then averaged over the batch"),
        (lambda l, t: -l[:, 1:].log_softmax(-1).gather(-1, t[:, 1:, None]).mean(), "drop the *last* logits"),
        (lambda l, t: -_shifted(l, t).mean(1), "averaged over positions only"),
        (lambda l, t: -_shifted(l, t).mean(0), "averaged over the batch only"),
        (lambda l, t: -_shifted(l, t), "one number"),
    ],
    ids=[
        "no-shift",
        "shift-backwards",
        "no-log-softmax",
        "softmax-positions",
        "softmax-positions-before-slicing",
        "no-minus",
        "mean-over-vocabulary",
        "sum",
        "sum-over-positions-mean-over-batch",
        "same-positions",
        "mean-over-positions-only",
        "mean-over-batch-only",
        "no-mean",
    ],
)
def test_mean_loss_mistakes(wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        c.check_mean_loss(wrong)


def test_mean_loss_accepts_cross_entropy(capsys):
    c.check_mean_loss(lambda l, t: torch.nn.functional.cross_entropy(l[:, :-1].flatten(0, 1), t[:, 1:].flatten()))
    assert "✓" in capsys.readouterr().out


def test_logits_from_residual_accepts_the_unembed_component(model, capsys):
    c.check_logits_from_residual(lambda m, r: m.unembed(m.ln_final(r)), model)
    assert "✓" in capsys.readouterr().out


def test_logits_from_residual_accepts_a_layernorm_written_with_its_weights(model, capsys):
    def by_hand(m, r):
        normed = torch.nn.functional.layer_norm(r, r.shape[-1:], m.ln_final.w, m.ln_final.b, eps=m.cfg.eps)
        return normed @ m.W_U + m.b_U

    c.check_logits_from_residual(by_hand, model)
    assert "✓" in capsys.readouterr().out


def test_logits_from_residual_puts_a_zero_bias_back(model):
    assert not model.b_U.any()
    c.check_logits_from_residual(lambda m, r: m.ln_final(r) @ m.W_U + m.b_U, model)
    with pytest.raises(CheckFailed):
        c.check_logits_from_residual(lambda m, r: None, model)
    assert not model.b_U.any(), "the check must leave the model's bias as it found it"


@pytest.mark.parametrize(
    "wrong,message",
    [
        (lambda m, r: r @ m.W_U + m.b_U, "final normalisation (model.ln_final) before"),
        (lambda m, r: m.ln_final(r) @ m.W_E.T + m.b_U, "W_E.T is the transposed embedding"),
        (lambda m, r: r @ m.W_E.T + m.b_U, "two steps differ"),
        (lambda m, r: m.ln_final(r), "d_vocab"),
        (lambda m, r: m.ln_final(r) @ m.W_U, "This model's bias is zero"),
        (
            lambda m, r: torch.nn.functional.layer_norm(r, r.shape[-1:]) @ m.W_U + m.b_U,
            "left out the final normalisation's learned weights",
        ),
        (
            lambda m, r: (r - r.mean(-1, keepdim=True)) / (r - r.mean(-1, keepdim=True)).std(-1, keepdim=True) @ m.W_U,
            "left out the final normalisation's learned weights",
        ),
    ],
    ids=[
        "no-normalisation",
        "embedding-transposed",
        "both",
        "no-unembedding",
        "no-bias",
        "layernorm-by-hand",
        "std-by-hand",
    ],
)
def test_logits_from_residual_mistakes(model, wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        c.check_logits_from_residual(wrong, model)


def test_logits_from_residual_names_a_missing_bias_where_the_model_has_one():
    from utils import load_model

    with torch.no_grad():
        attn2l = load_model("storyworld-attn2l", device="cpu")  # its b_U is not zero
        with pytest.raises(CheckFailed, match=re.escape("unembedding bias")) as failure:
            c.check_logits_from_residual(lambda m, r: m.ln_final(r) @ m.W_U, attn2l)
        assert "random values" not in str(failure.value)


def test_logits_from_residual_names_a_hand_written_rmsnorm_without_its_weight():
    from utils import load_model

    def rms_by_hand(m, r):
        return r / (r.pow(2).mean(-1, keepdim=True) + m.cfg.eps).sqrt() @ m.W_U + m.b_U

    with torch.no_grad():
        llama = load_model("storyworld-llama", device="cpu")
        with pytest.raises(CheckFailed, match=re.escape("learned weights")):
            c.check_logits_from_residual(rms_by_hand, llama)
        c.check_logits_from_residual(lambda m, r: m.ln_final(r) @ m.W_U + m.b_U, llama)


def _last_batch_element(r, h, d, s):
    r = r.clone()
    r[-1] += s * d
    return r


@pytest.mark.parametrize(
    "wrong,message",
    [
        (lambda r, h, d, s: r + s * d, "every position"),
        (lambda r, h, d, s: None, "returned None"),
        (lambda r, h, d, s: torch.cat([r[:, :1] + s * d, r[:, 1:]], 1), "first position"),
        (_last_batch_element, "last batch element"),
        (lambda r, h, d, s: torch.cat([r[:, :-1], r[:, -1:] + d], 1), "scale"),
        (lambda r, h, d, s: torch.cat([r[:, :-1], r[:, -1:] + s * d / d.norm()], 1), "divided `direction` by its norm"),
    ],
    ids=["every-position", "none", "first-position", "last-batch-element", "no-scale", "normalised-again"],
)
def test_boost_hook_mistakes(wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        c.check_boost_hook(wrong)


def test_boost_hook_rejects_in_place_edits():
    def in_place(r, h, d, s):
        r[:, -1] += s * d
        return r

    with pytest.raises(CheckFailed, match="in place.*clone"):
        c.check_boost_hook(in_place)


def test_boost_hook_accepts_an_out_of_place_solution(capsys):
    c.check_boost_hook(lambda r, h, d, s: torch.cat([r[:, :-1], r[:, -1:] + s * d], 1))
    assert "✓" in capsys.readouterr().out


def test_checks_ask_for_the_function_itself():
    with pytest.raises(CheckFailed, match="function itself"):
        c.check_boost_hook(torch.zeros(3))
    with pytest.raises(CheckFailed, match="function itself"):
        c.check_mean_loss(1.0)


def _boost(resid, hook, direction, scale):
    resid = resid.clone()
    resid[:, -1] = resid[:, -1] + scale * direction
    return resid


def _sweep(m, tokens, hook_name, direction, scales, at=None, keep=lambda logits: logits[0, -1]):
    """One run per scale with the push at ``at`` (else ``hook_name``); ``keep`` picks what a row holds."""
    rows = []
    for scale in scales:
        hook = functools.partial(_boost, direction=direction, scale=scale)
        rows.append(keep(m.run_with_hooks(tokens, fwd_hooks=[(at or hook_name, hook)])))
    return torch.stack(rows)


def _hooks_left_on(m, tokens, hook_name, direction, scales):
    rows = []
    for scale in scales:
        m.add_hook(hook_name, functools.partial(_boost, direction=direction, scale=scale))
        rows.append(m(tokens)[0, -1])
    return torch.stack(rows)


def _hooks_taken_off_at_the_end(m, tokens, hook_name, direction, scales):
    out = _hooks_left_on(m, tokens, hook_name, direction, scales)
    m.reset_hooks()
    return out


def test_push_sweep_check(model, prove_check):
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    wrong = {
        "each hook stayed on the model after its run; use model.run_with_hooks": _hooks_left_on,
        "the pushes add up from one run to the next": _hooks_taken_off_at_the_end,
        "returned a list of 4 rows; stack them": lambda m, t, h, d, s: list(_sweep(m, t, h, d, s)),
        "left out the first scale": lambda m, t, h, d, s: _sweep(m, t, h, d, s[1:]),
        "left out the last scale": lambda m, t, h, d, s: _sweep(m, t, h, d, s[:-1]),
        "these are probabilities, not logits": lambda m, t, h, d, s: _sweep(m, t, h, d, s).softmax(-1),
        "these are log-probabilities": lambda m, t, h, d, s: _sweep(m, t, h, d, s).log_softmax(-1),
        "the hook never ran": lambda m, t, h, d, s: torch.stack([m(t)[0, -1] for _ in s]),
        f"you pushed at {last}": lambda m, t, h, d, s: _sweep(m, t, h, d, s, at=last),
        "dimension 0 (scale) is 5 but should be 4": lambda m, t, h, d, s: _sweep(m, t, h, d, [*s, 0.0]),
        "expected 2: [scale, d_vocab]": lambda m, t, h, d, s: _sweep(m, t, h, d, s, keep=lambda x: x[:, -1]),
        "gives the wrong logits": lambda m, t, h, d, s: _sweep(m, t, h, d, [2 * x for x in s]),
    }
    prove_check(c.check_push_sweep, _sweep, wrong, model)
    assert c._live_hooks(model) == 0, "the check takes off any hook a wrong answer left on the model"


def test_push_sweep_check_names_only_the_first_failure_step_once(model):
    with pytest.raises(CheckFailed) as failure:
        c.check_push_sweep(_hooks_left_on, model)
    what, fix = two_steps(str(failure.value))
    assert "stayed on the model" in what and "run_with_hooks" not in what
    assert fix.startswith("Use model.run_with_hooks")
