"""The setup cell: Colab install without torch/numpy pins, version mismatches stop loudly."""

import sys
import types

import pytest

from utils import notebook_setup as ns
from utils import versions


@pytest.fixture(autouse=True)
def restore_grad_mode():
    import torch
    was = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(was)


@pytest.fixture
def colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


@pytest.fixture
def calls(monkeypatch):
    made = []
    monkeypatch.setattr(ns, "_run", lambda cmd: made.append(cmd))
    return made


def fake_versions(monkeypatch, **overrides):
    table = {p: v for p, v in versions.TESTED.items()}
    table.update({k.replace("_", "-"): v for k, v in overrides.items()})
    monkeypatch.setattr(versions, "installed", lambda p: table.get(p))


def test_matching_environment_sets_up_quietly_and_returns_a_device(calls):
    assert ns.setup(quiet=True) in ("cpu", "cuda", "mps")
    assert calls == []


def test_version_mismatch_stops_with_the_exact_fix(monkeypatch, calls):
    fake_versions(monkeypatch, transformer_lens="4.3.0")
    with pytest.raises(ns.SetupError) as e:
        ns.setup(quiet=True)
    msg = str(e.value)
    assert "transformer-lens: installed 4.3.0, tested 3.9.0" in msg
    assert "make setup" in msg and "constraints.txt" in msg


def test_mismatch_can_be_allowed_explicitly(monkeypatch, calls, capsys):
    fake_versions(monkeypatch, plotly="5.0.0")
    ns.setup(allow_mismatch=True, quiet=True)
    assert "plotly: installed 5.0.0" in capsys.readouterr().out


def test_missing_package_is_reported_as_nothing_installed(monkeypatch, calls):
    fake_versions(monkeypatch, sae_lens=None)
    with pytest.raises(ns.SetupError, match="sae-lens: installed nothing"):
        ns.setup(quiet=True)


def test_colab_installs_the_course_without_touching_torch_or_numpy(monkeypatch, colab, calls):
    fake_versions(monkeypatch, torch="2.5.1+cu121", numpy="1.26.4", transformers="4.44.0")
    with pytest.raises(ns.SetupError):  # the fake install changes nothing, so the check still fails
        ns.setup(quiet=True)
    assert len(calls) == 1
    cmd = " ".join(calls[0])
    assert "-c" in calls[0] and "constraints.txt" in cmd
    assert "torch" not in cmd and "numpy" not in cmd
    constraints = (ns.ROOT / "constraints.txt").read_text()
    assert "torch" not in constraints and "numpy" not in constraints


def test_colab_keeps_its_torch_and_numpy_when_the_rest_matches(monkeypatch, colab, calls):
    fake_versions(monkeypatch, torch="2.5.1+cu121", numpy="1.26.4")
    ns.setup(quiet=True)
    assert calls == []


def test_colab_torch_outside_the_range_is_reported(monkeypatch, colab, calls):
    fake_versions(monkeypatch, torch="2.1.0")
    with pytest.raises(ns.SetupError, match="torch: installed 2.1.0"):
        ns.setup(quiet=True)


def test_setup_turns_gradients_off_by_default():
    import torch
    ns.setup(quiet=True)
    assert not torch.is_grad_enabled()
    ns.setup(quiet=True, grad=True)
    assert torch.is_grad_enabled()
