"""Lesson-00 checks reject plausible mistakes with a sentence that names them."""

import re

import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson00_orientation as c


@pytest.fixture(scope="module")
def model():
    from utils import load_model

    torch.set_grad_enabled(False)
    yield load_model("storyworld-4l", device="cpu")
    torch.set_grad_enabled(True)


def test_top_prediction_mistakes(model):
    with pytest.raises(CheckFailed, match="token id"):
        c.check_top_prediction(lambda m, t: m(m.to_tokens(t))[0, -1].argmax(), model)
    with pytest.raises(CheckFailed, match="first position"):
        c.check_top_prediction(lambda m, t: m.to_string(m(m.to_tokens(t))[0, 0].argmax()), model)
    with pytest.raises(CheckFailed, match="top prediction is"):
        c.check_top_prediction(lambda m, t: " Zoe", model)


@pytest.mark.parametrize(
    "wrong,message",
    [
        (lambda l, t: -l.log_softmax(-1).gather(-1, t[..., None]).mean(), "no shift"),
        (lambda l, t: -l[:, :-1].gather(-1, t[:, 1:, None]).mean(), "log_softmax"),
        (lambda l, t: -l[:, :-1].log_softmax(-1).gather(-1, t[:, 1:, None]).sum(), "not the sum"),
        (lambda l, t: -l[:, :-1].log_softmax(-1).gather(-1, t[:, 1:, None])[..., 0], "one number"),
    ],
)
def test_mean_loss_mistakes(wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        c.check_mean_loss(wrong)


def test_mean_loss_accepts_cross_entropy(capsys):
    c.check_mean_loss(lambda l, t: torch.nn.functional.cross_entropy(l[:, :-1].flatten(0, 1), t[:, 1:].flatten()))
    assert "✓" in capsys.readouterr().out


def test_logits_from_residual_mistakes(model):
    with pytest.raises(CheckFailed, match="final LayerNorm"):
        c.check_logits_from_residual(lambda m, r: r @ m.W_U + m.b_U, model)
    with pytest.raises(CheckFailed, match="d_vocab"):
        c.check_logits_from_residual(lambda m, r: m.ln_final(r), model)


@pytest.mark.parametrize(
    "wrong,message",
    [
        (lambda r, h, d, s: r + s * d, "every position"),
        (lambda r, h, d, s: None, "returned None"),
        (lambda r, h, d, s: torch.cat([r[:, :1] + s * d, r[:, 1:]], 1), "first position"),
        (lambda r, h, d, s: torch.cat([r[:, :-1], r[:, -1:] + d], 1), "scale"),
    ],
)
def test_boost_hook_mistakes(wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        c.check_boost_hook(wrong)


def test_boost_hook_rejects_in_place_edits():
    def in_place(r, h, d, s):
        r[:, -1] += s * d
        return r

    with pytest.raises(CheckFailed, match="in place"):
        c.check_boost_hook(in_place)
