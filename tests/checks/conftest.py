"""What every exercise check must be shown to do, shared by the lessons' check tests."""

import re

import pytest
import torch

from utils.checks import CheckFailed


def _stub(*args, **kwargs):
    raise NotImplementedError("exercise")


@pytest.fixture
def prove_check(capsys):
    """``prove_check(check, solution, wrong, *args)``: ``check(solution, *args)`` passes with its
    ✓ line, the stub fails as a stub, and each ``wrong[message]`` fails with ``message`` in the
    sentence it says."""

    def prove(check, solution, wrong, *args):
        check(solution, *args)
        assert "✓" in capsys.readouterr().out
        with pytest.raises(CheckFailed, match="still the stub"):
            check(_stub, *args)
        for message, fn in wrong.items():
            with pytest.raises(CheckFailed, match=re.escape(message)):
                check(fn, *args)

    return prove


@pytest.fixture(scope="module", params=["storyworld-4l", "storyworld-llama"])
def model(request):
    """Each zoo model with MLPs, as a lesson loads it, gradients off (a check file that needs the model
    another way, in compatibility mode say, defines its own ``model``)."""
    from utils import load_model

    with torch.no_grad():
        yield load_model(request.param, device="cpu")
