"""The model zoo: loads offline, matches its cards' checksums, fails clearly on bad input."""

import pickle

import pytest
import torch

from utils import paths
from utils.corpora.tokenizer import corpus_tokenizer, corpus_tokenizer_hash, encode_doc
from utils.model_zoo import models
from utils.model_zoo.models import ZooError, load_model, read_card, sha256_file, zoo

BUILT = zoo()


def test_every_zoo_model_is_built():
    assert set(models.ZOO) == set(BUILT)


@pytest.mark.parametrize("name", BUILT)
def test_zoo_model_loads_offline_and_runs(name):
    from utils.corpora import beliefs, countdown

    model = load_model(name, device="cpu")
    corpus = models.corpus_of(name)
    if corpus == "countdown":
        ids = torch.tensor([countdown.encode(countdown.sample(0, 0).text)])
    elif corpus == "beliefs":
        ids = torch.tensor([beliefs.encode(beliefs.sample(0, 0).text)])
    else:
        ids = torch.tensor([encode_doc("Ann was in the park. Ann felt happy.")])
    logits = model(ids)
    assert logits.shape == (1, ids.shape[1], len(corpus_tokenizer(corpus)))
    assert torch.isfinite(logits).all()


def test_the_gpt2_zoo_models_gelu_is_fused_and_computes_the_same_function():
    from transformers.activations import GELUTanh, NewGELUActivation

    model = load_model("storyworld-4l", device="cpu")
    kinds = {type(m) for m in model.modules()}
    assert GELUTanh in kinds and NewGELUActivation not in kinds
    assert model.cfg.act_fn == "gelu_new"  # the config still names the function the model was trained with
    x = torch.linspace(-8, 8, 10_001)
    assert torch.allclose(GELUTanh()(x), NewGELUActivation()(x), atol=1e-6)
    ids = torch.tensor([encode_doc("Ann was in the park. Ann felt happy.")])
    _, cache = model.run_with_cache(ids)
    assert "blocks.0.mlp.hook_post" in cache  # the hooks around the activation are still there


@pytest.mark.parametrize("name", BUILT)
def test_weights_match_the_checksum_on_the_card(name):
    card = read_card(name)
    assert sha256_file(paths.MODELS / name / "model.safetensors") == card["weights_sha256"]
    assert card["tokenizer_sha256"] == corpus_tokenizer_hash(models.corpus_of(name))


def test_unknown_model_name_lists_the_zoo_without_asking_the_hub(monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("a zoo-like name must not be looked up on the hub")

    monkeypatch.setattr(models, "_load_hub", no_hub)
    with pytest.raises(ValueError) as e:
        load_model("storyworld-5l")
    msg = str(e.value)
    assert all(n in msg for n in BUILT)
    assert "did you mean" in msg


def test_hub_name_offline_fails_with_the_flag_named_and_the_zoo_listed():
    with pytest.raises(ValueError) as e:
        load_model("gpt2-small")
    assert "HF_HUB_OFFLINE" in str(e.value) and all(n in str(e.value) for n in BUILT)


def test_unbuilt_model_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "MODELS", tmp_path)
    with pytest.raises(ZooError, match="python -m utils.model_zoo.train countdown-llama"):
        load_model("countdown-llama")


@pytest.fixture
def copied_zoo(copy_zoo_model):
    name = BUILT[0]
    return name, copy_zoo_model(name)


def test_corrupt_weights_fail_with_the_rebuild_command(copied_zoo):
    name, folder = copied_zoo
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ZooError) as e:
        load_model(name, device="cpu")
    assert f"python -m utils.model_zoo.train {name}" in str(e.value) and "sha256" in str(e.value)


def test_truncated_weights_fail_clearly_even_without_the_checksum(copied_zoo):
    name, folder = copied_zoo
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ZooError, match=f"python -m utils.model_zoo.train {name}"):
        load_model(name, device="cpu", verify=False)


def test_missing_weights_say_how_to_rebuild(copied_zoo):
    name, folder = copied_zoo
    (folder / "model.safetensors").unlink()
    with pytest.raises(ZooError, match=f"python -m utils.model_zoo.train {name}"):
        load_model(name, device="cpu")


@pytest.fixture
def halved_copy(tmp_path):
    """A copy of a zoo model, elsewhere than data/models, with every weight halved (its card's
    checksum updated to match)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    name = BUILT[0]
    folder = tmp_path / "elsewhere" / name
    shutil.copytree(paths.MODELS / name, folder)
    weights = folder / "model.safetensors"
    save_file({k: v / 2 for k, v in load_file(weights).items()}, weights)
    card = json.loads((folder / "card.json").read_text())
    card["weights_sha256"] = sha256_file(weights)
    (folder / "card.json").write_text(json.dumps(card))
    return name, folder


def _first_weight(model) -> torch.Tensor:
    return next(p for p in model.parameters() if p.dim() >= 2).detach()


def test_load_model_reads_the_folder_it_is_given(halved_copy):
    name, folder = halved_copy
    committed, copy = load_model(name, device="cpu"), load_model(name, device="cpu", folder=folder)
    torch.testing.assert_close(_first_weight(copy), _first_weight(committed) / 2, rtol=1e-3, atol=1e-6)


def test_a_card_written_for_another_folder_measures_that_folders_model(halved_copy, monkeypatch):
    from utils.cards import model_cards as evaluate

    name, folder = halved_copy
    seen = []

    def stop(name, model):
        seen.append(_first_weight(model))
        raise RuntimeError("measured")

    monkeypatch.setattr(evaluate, "measure", stop)
    with pytest.raises(RuntimeError, match="measured"):
        evaluate.write_card(name, model_dir=folder)
    torch.testing.assert_close(seen[0], _first_weight(load_model(name, device="cpu")) / 2, rtol=1e-3, atol=1e-6)


class Payload:
    """Unpickling this writes a file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def copied_hf_model(copy_zoo_model):
    return copy_zoo_model("storyworld-4l")


def test_a_pickled_checkpoint_beside_the_weights_is_never_unpickled(copied_hf_model, tmp_path):
    marker = tmp_path / "unpickled"
    (copied_hf_model / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    load_model("storyworld-4l", device="cpu")
    assert not marker.exists()
    (copied_hf_model / "model.safetensors").unlink()
    with pytest.raises(ZooError, match="python -m utils.model_zoo.train storyworld-4l"):
        load_model("storyworld-4l", device="cpu")
    assert not marker.exists()


def test_data_folder_stays_under_50_mb():
    total = sum(p.stat().st_size for p in paths.DATA.rglob("*") if p.is_file())
    assert total < 50e6, f"data/ is {total / 1e6:.1f} MB"


def test_device_default_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert models.default_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.default_device() == "cpu"


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gemma2", "qwen2"])
def test_a_folder_saved_in_the_hubs_format_loads_offline_as_a_hub_model_would(random_model_folders, architecture):
    from transformers import AutoTokenizer

    from utils.corpora.tokenizer import corpus_tokenizer
    from utils.model_zoo import pretrained

    model = load_model(str(random_model_folders[architecture]))
    text = "Mara felt calm. Tom gave the cup to Mara."
    # the Llama was saved with SmolLM2's tokenizer, the others with the course's
    real = architecture == "llama"
    saved_with = AutoTokenizer.from_pretrained(str(pretrained.ensure())) if real else corpus_tokenizer("storyworld")
    assert model.tokenizer.encode(text, add_special_tokens=False) == saved_with.encode(text, add_special_tokens=False)
    assert model.cfg.d_vocab == len(saved_with) == (49152 if architecture == "llama" else 985)
    tokens = model.to_tokens(text)
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (1, tokens.shape[1], len(model.tokenizer))
    assert model.cfg.n_layers == 2 and f"blocks.{model.cfg.n_layers - 1}.hook_resid_post" in cache
    assert not model.training


def test_a_folder_with_only_pickled_weights_is_refused_without_unpickling(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(ValueError, match=r"only pytorch_model.bin, which the course never unpickles"):
        load_model(str(tmp_path))


def test_a_folder_without_a_config_says_what_load_model_takes(tmp_path):
    with pytest.raises(ValueError, match="holds no config.json: load_model takes a zoo name, a hub name, or a folder"):
        load_model(str(tmp_path))


def test_the_rebuild_command_in_every_message_replaces_the_zoo_model_by_name():
    import shlex

    from utils.model_zoo import saes, train

    words = shlex.split(models.rebuild_command("storyworld-4l"))
    assert words[:3] == ["python", "-m", "utils.model_zoo.train"]
    assert train._parser().parse_args(words[3:]).replace_zoo_model
    words = shlex.split(saes.rebuild_command(saes.DEFAULT_SAE))
    assert words[:3] == ["python", "-m", "utils.model_zoo.saes"]
    args = saes._parser().parse_args(words[3:])
    assert args.replace_zoo_sae and args.retrain  # an SAE whose files are damaged may still look up to date
