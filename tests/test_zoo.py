"""The model zoo: loads offline, matches its cards, fails clearly on bad input."""

import shutil
import time

import pytest
import torch

from utils import evaluate as ev
from utils import models
from utils.models import ZooError, load_model, read_card, sha256_file, zoo
from utils.tokenizer import encode_doc, load_tokenizer, tokenizer_hash

BUILT = zoo()
# A fresh held-out sample, smaller than the card's: how far each number may move. Accuracies
# get three binomial standard errors of the small sample on top of a floor (a 100%-accurate
# model must stay at 100%), the gap three standard errors over documents on top of a floor;
# the rest have fixed tolerances set from the spread of repeated measurements.
SMALL = dict(seed=9300, n_docs=400, n_random=30)
SMALL_TOLERANCE = {"gap": 0.03, "ioi_logit_diff": 0.6,
                   "prev_token_score_layer0": 0.06, "induction_score_layer1": 0.06,
                   "induction_score": 0.06, "repeat_loss_drop": 0.5,
                   "song_loss_first_copy": 0.15, "song_loss_second_copy": 0.15}
# The sample size behind each accuracy: tokens of one sentence share a label and mostly
# agree, so the probe's effective sample is its test sentences, not its tokens.
ACCURACIES = {"ioi_accuracy": "ioi_prompts", "emotion_probe_accuracy": "emotion_probe_test_sentences"}


def tolerance(metric, card_value, fresh):
    if metric in ACCURACIES:
        n = fresh[ACCURACIES[metric]]
        return 0.02 + 3 * (card_value * (1 - card_value) / n) ** 0.5
    if metric == "gap":
        # A model that has not learned to copy songs pays for every song token, so its gap
        # varies with the share of songs in the sample: add three standard errors.
        return SMALL_TOLERANCE["gap"] + 3 * fresh["gap_se"]
    return SMALL_TOLERANCE[metric]


def test_the_first_three_zoo_models_are_built():
    assert {"storyworld-attn2l", "storyworld-4l", "storyworld-llama"} <= set(BUILT)


@pytest.mark.parametrize("name", BUILT)
def test_zoo_model_loads_offline_and_runs(name):
    model = load_model(name, device="cpu")
    ids = torch.tensor([encode_doc("Ann was in the park. Ann felt happy.")])
    logits = model(ids)
    assert logits.shape == (1, ids.shape[1], len(load_tokenizer()))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", BUILT)
def test_weights_match_the_checksum_on_the_card(name):
    card = read_card(name)
    assert sha256_file(models.MODELS / name / "model.safetensors") == card["weights_sha256"]
    assert card["tokenizer_sha256"] == tokenizer_hash()


@pytest.mark.parametrize("name", BUILT)
def test_card_records_architecture_training_and_measurements(name):
    import math
    from safetensors import safe_open
    card = read_card(name)
    with safe_open(str(models.MODELS / name / "model.safetensors"), "pt") as f:
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert card["n_params"] == stored  # the checkpoint's own parameters (the bridge adds a zero unembed bias)
    for key in ("tokens", "seconds", "seed", "data_seed", "device"):
        assert key in card["training"]
    for key in ("loss", "floor", "gap", "ioi_accuracy", "induction_score"):
        assert key in card["eval"]
    assert card["eval"]["gap"] == pytest.approx(card["eval"]["loss"] - card["eval"]["floor"])
    assert card["targets"] == ev.check_targets(name, card["eval"])
    readme = (models.MODELS / name / "README.md").read_text()
    assert ev.card_markdown(card) == readme, "README.md is stale: python -m utils.evaluate NAME --write-card"


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT)
def test_card_metrics_agree_with_a_fresh_small_sample(name):
    card = read_card(name)
    fresh = ev.measure(name, progress=False, **SMALL)
    checked = 0
    for metric in list(SMALL_TOLERANCE) + list(ACCURACIES):
        if metric in card["eval"] and metric in fresh:
            tol = tolerance(metric, card["eval"][metric], fresh)
            assert abs(fresh[metric] - card["eval"][metric]) <= tol, (metric, fresh[metric], card["eval"][metric], tol)
            checked += 1
    assert checked >= 4


def test_unknown_model_name_lists_the_zoo():
    t = time.time()
    with pytest.raises(ValueError) as e:
        load_model("storyworld-5l")
    msg = str(e.value)
    assert all(n in msg for n in BUILT)
    assert "Did you mean" in msg
    assert time.time() - t < 5


def test_hub_name_offline_fails_quickly_with_the_zoo_listed():
    t = time.time()
    with pytest.raises(ValueError) as e:
        load_model("gpt2-small")
    assert "HF_HUB_OFFLINE" in str(e.value) and all(n in str(e.value) for n in BUILT)
    assert time.time() - t < 30


def test_planned_but_unbuilt_model_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "MODELS", tmp_path)
    with pytest.raises(ZooError, match="python -m utils.train countdown-llama"):
        load_model("countdown-llama")


@pytest.fixture
def copied_zoo(tmp_path, monkeypatch):
    name = BUILT[0]
    shutil.copytree(models.MODELS / name, tmp_path / name)
    monkeypatch.setattr(models, "MODELS", tmp_path)
    return name, tmp_path / name


def test_corrupt_weights_fail_with_the_rebuild_command(copied_zoo):
    name, folder = copied_zoo
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ZooError) as e:
        load_model(name, device="cpu")
    assert f"python -m utils.train {name}" in str(e.value) and "sha256" in str(e.value)


def test_truncated_weights_fail_clearly_even_without_the_checksum(copied_zoo):
    name, folder = copied_zoo
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ZooError, match=f"python -m utils.train {name}"):
        load_model(name, device="cpu", verify=False)


def test_missing_weights_say_how_to_rebuild(copied_zoo):
    name, folder = copied_zoo
    (folder / "model.safetensors").unlink()
    with pytest.raises(ZooError, match=f"python -m utils.train {name}"):
        load_model(name, device="cpu")


def test_weights_are_never_unpickled():
    import pathlib
    for path in pathlib.Path(models.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "pickle" not in text.replace("no pickle", "").replace("never unpickle", ""), path
        assert "trust_remote_code=True" not in text, path


def test_data_folder_stays_under_50_mb():
    total = sum(p.stat().st_size for p in models.DATA.rglob("*") if p.is_file())
    assert total < 50e6, f"data/ is {total / 1e6:.1f} MB"


def test_device_default_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert models.default_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.default_device() == "cpu"


def test_readme_zoo_table_is_generated_from_the_cards():
    text = ev.README.read_text()
    assert ev.readme_with_table(text) == text, "README is stale: python -m utils.evaluate --readme"


def test_readme_starts_with_the_two_setup_commands():
    text = ev.README.read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make course", "make test"]
