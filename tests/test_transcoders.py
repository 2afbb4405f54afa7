"""The zoo's transcoders: built, loaded from safetensors against their cards, trained by eai-sparsify with the
course's stack, measured as their cards say, and refused in one sentence when a file is missing or changed."""

import json
import shutil

import pytest
import torch

from utils import seeds
from utils.cards import transcoder_cards
from utils.corpora import storyworld
from utils.metrics.transcoders import evaluate_transcoders
from utils.model_zoo import transcoders as T
from utils.model_zoo.models import ZooError, load_model
from utils.model_zoo.registry import TRANSCODERS, TranscoderSpec, transcoder_entry


@pytest.fixture
def copied_set(tmp_path):
    name = "storyworld-4l-transcoders"
    folder = tmp_path / name
    shutil.copytree(T.TRANSCODERS_DIR / name, folder)
    return name, folder


def test_every_zoo_transcoder_set_is_built_with_one_transcoder_per_mlp_layer():
    assert transcoder_cards.built() == list(TRANSCODERS)
    for name, spec in TRANSCODERS.items():
        tcs = T.load_transcoders(name)
        model = load_model(spec.model)
        assert [tc.layer for tc in tcs] == list(range(model.cfg.n_layers))
        assert all(tc.W_enc.shape == (model.cfg.d_model, spec.d_tc) and tc.k == spec.k for tc in tcs)


@pytest.mark.parametrize("name", list(TRANSCODERS))
def test_transcoder_card_readme_is_what_the_card_writer_writes(name):
    card = json.loads((T.TRANSCODERS_DIR / name / "card.json").read_text())
    assert (T.TRANSCODERS_DIR / name / "README.md").read_text() == transcoder_cards.card_markdown(card)


def test_unknown_transcoder_set_name_lists_the_zoos_sets(capsys):
    with pytest.raises(KeyError, match="storyworld-4l-transcoders"):
        transcoder_entry("storyworld-9l-transcoders")
    assert T.main(["storyworld-9l-transcoders"]) == 2
    assert "storyworld-llama-transcoders" in capsys.readouterr().err


def test_a_missing_transcoder_file_says_how_to_rebuild(copied_set):
    name, folder = copied_set
    (folder / "layer2.safetensors").unlink()
    with pytest.raises(ZooError, match=r"layer2\.safetensors is missing.*python -m utils\.model_zoo\.transcoders"):
        T.load_transcoders(name, folder=folder)


def test_a_changed_transcoder_file_fails_its_checksum_with_the_rebuild_command(copied_set):
    name, folder = copied_set
    path = folder / "layer1.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ZooError, match="does not match its card.*--replace-zoo"):
        T.load_transcoders(name, folder=folder)


def test_a_set_without_a_card_is_not_built(tmp_path):
    with pytest.raises(ZooError, match="not built.*card.json is missing"):
        T.load_transcoders("storyworld-4l-transcoders", folder=tmp_path)


def test_saved_transcoders_load_back_as_float16_rounded_weights(tmp_path):
    g = torch.Generator().manual_seed(0)
    tcs = [
        T.Transcoder(
            i,
            3,
            torch.randn(8, 16, generator=g),
            torch.randn(16, generator=g),
            torch.randn(16, 8, generator=g),
            torch.randn(8, generator=g),
        )
        for i in range(2)
    ]
    files = T.save(tcs, tmp_path)
    card = {"layers": 2, "sha256": {f.name: T.sha256_file(f) for f in files}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    back = T.load_transcoders("any", folder=tmp_path)
    for a, b in zip(tcs, back):
        assert b.k == 3 and b.W_enc.dtype == torch.float32
        assert torch.equal(b.W_dec, a.W_dec.half().float())


def test_eai_sparsify_trains_transcoders_on_a_zoo_model_with_the_courses_stack(tmp_path):
    spec = TranscoderSpec("tiny", "storyworld-llama", d_tc=32, k=4, tokens=256 * 16, rows_per_batch=4)
    out = T.train(spec, tmp_path / "tiny")
    training = json.loads((out / "training.json").read_text())
    assert training["hookpoints"] == [f"layers.{i}.mlp" for i in range(4)]
    assert not (out / "sparsify").exists(), "sparsify's own checkpoints are not kept"
    (out / "card.json").write_text(json.dumps({"layers": 4, "sha256": training["sha256"]}))
    tcs = T.load_transcoders("tiny", folder=out)
    assert all(tc.d_tc == 32 and tc.k == 4 for tc in tcs)
    assert not any(p.suffix in (".pt", ".pkl") for p in out.rglob("*"))


def test_a_transcoder_that_writes_nothing_splices_in_as_the_mlp_zeroed():
    model = load_model("storyworld-4l")
    d = model.cfg.d_model
    silent = [
        T.Transcoder(i, 2, torch.zeros(d, 8), torch.full((8,), -1.0), torch.zeros(8, d), torch.zeros(d))
        for i in range(model.cfg.n_layers)
    ]
    card = evaluate_transcoders(model, silent, storyworld.sample_docs(seeds.EVAL + 1, 6))
    assert card["loss_all_spliced"] == pytest.approx(card["loss_zero"], abs=1e-4)
    assert card["l0"] == [0.0] * 4 and card["dead"] == [1.0] * 4
    assert card["loss_recovered"] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("name", list(TRANSCODERS))
def test_card_metrics_agree_with_fresh_held_out_documents(name):
    card = json.loads((T.TRANSCODERS_DIR / name / "card.json").read_text())
    spec = transcoder_entry(name)
    fresh = evaluate_transcoders(
        load_model(spec.model), T.load_transcoders(name), storyworld.sample_docs(seeds.EVAL + 7, 40)
    )
    for was, now in zip(card["eval"]["explained_variance"], fresh["explained_variance"]):
        assert abs(was - now) < 0.02
    assert abs(card["eval"]["loss_recovered"] - fresh["loss_recovered"]) < 0.03
