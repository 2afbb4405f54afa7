"""The zoo's SAEs: SAELens's own format and loader, checksums, clear errors, cards that a fresh
measurement reproduces, and the training paths (ours and SAELens's runners) on a tiny budget."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from utils import paths, seeds
from utils.cards import sae_cards
from utils.corpora import storyworld
from utils.metrics.saes import evaluate_sae
from utils.model_zoo import saes
from utils.model_zoo.models import load_model
from utils.model_zoo.registry import DEFAULT_SAE, SAE_TOLERANCE, SAES


@pytest.fixture(scope="module")
def model():
    return load_model("storyworld-4l", "cpu")


@pytest.fixture
def copied_sae(tmp_path):
    folder = tmp_path / DEFAULT_SAE
    shutil.copytree(saes.SAES_DIR / DEFAULT_SAE, folder)
    return folder


def test_every_zoo_sae_is_built_and_up_to_date_with_its_spec_and_model():
    assert saes.built() == list(SAES)
    assert all(saes.up_to_date(name) for name in SAES)


@pytest.mark.parametrize("name", list(SAES))
def test_zoo_sae_loads_offline_with_sae_lens_own_loader(name):
    from sae_lens import SAE

    sae = saes.load_sae(name, "cpu")
    assert isinstance(sae, SAE)
    assert sae.cfg.architecture() == SAES[name].architecture
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (saes.read_card(name)["training"]["d_in"], SAES[name].d_sae)
    assert sae.cfg.metadata.hook_name == SAES[name].hook


def test_unknown_sae_name_lists_the_zoo_saes():
    with pytest.raises(KeyError) as e:
        saes.load_sae("storyworld-4l-res3-topkk")
    assert all(name in str(e.value) for name in SAES)


def test_missing_sae_weights_say_how_to_rebuild(copied_sae):
    (copied_sae / saes.WEIGHTS).unlink()
    with pytest.raises(saes.SAEError, match=f"python -m utils.model_zoo.saes {DEFAULT_SAE}"):
        saes.load_sae(DEFAULT_SAE, folder=copied_sae)


def test_corrupt_sae_weights_fail_with_the_rebuild_command(copied_sae):
    weights = copied_sae / saes.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(saes.SAEError, match="does not match the card.*python -m utils.model_zoo.saes"):
        saes.load_sae(DEFAULT_SAE, folder=copied_sae)


def test_a_changed_config_fails_its_checksum(copied_sae):
    cfg = json.loads((copied_sae / saes.CONFIG).read_text())
    cfg["d_sae"] = 1024
    (copied_sae / saes.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(saes.SAEError, match="cfg.json does not match"):
        saes.load_sae(DEFAULT_SAE, folder=copied_sae)


@pytest.mark.parametrize("name", list(SAES))
def test_sae_card_readme_is_what_the_card_writer_writes(name):
    card = saes.read_card(name)
    assert (saes.SAES_DIR / name / "README.md").read_text() == sae_cards.card_markdown(card)


def test_the_default_sae_loses_least_at_about_the_same_l0():
    spec = SAES[DEFAULT_SAE]
    cards = {n: saes.read_card(n)["eval"] for n, o in SAES.items() if (o.model, o.hook) == (spec.model, spec.hook)}
    assert len(cards) >= 2, "the default was chosen by comparing architectures"
    default = cards.pop(DEFAULT_SAE)
    for other in cards.values():
        assert default["loss_spliced"] < other["loss_spliced"]
        assert abs(default["l0"] - other["l0"]) <= 0.25 * default["l0"], "not a comparison at matched L0"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SAES))
def test_card_metrics_agree_with_fresh_held_out_documents(name):
    model = load_model(SAES[name].model, "cpu")
    card = saes.read_card(name)["eval"]
    fresh = evaluate_sae(
        model, saes.load_sae(name, "cpu"), SAES[name].hook, storyworld.sample_docs(seeds.TEST_SAMPLE, 150)
    )
    for key, tol in SAE_TOLERANCE.items():
        assert abs(fresh[key] - card[key]) <= tol, (key, fresh[key], card[key])


def test_cached_activations_reuse_finished_chunks(model, tmp_path, monkeypatch):
    monkeypatch.setattr(saes, "ROWS_PER_CHUNK", 2)
    spec = SAES[DEFAULT_SAE]
    first = saes.cached_activations(spec, model, 1500, tmp_path)
    chunks = sorted(tmp_path.glob("chunk-*.safetensors"))
    assert len(chunks) >= 2 and first.shape == (1500, 256) and first.dtype == torch.float16
    kept = chunks[0].stat().st_mtime_ns
    chunks[-1].unlink()  # as if interrupted while writing it
    again = saes.cached_activations(spec, model, 1500, tmp_path)
    assert torch.equal(first, again)
    assert chunks[0].stat().st_mtime_ns == kept
    assert 0 < saes.activation_seconds(tmp_path, 1500) < 60  # each chunk keeps what it cost


def test_activations_leave_out_the_boundary_tokens(model):
    from utils.corpora.tokenizer import EOT, load_tokenizer

    eot = load_tokenizer().convert_tokens_to_ids(EOT)
    rows = torch.tensor([[eot, 5, 6, eot, 7]])
    assert saes.activations(model, "blocks.3.hook_resid_post", rows).shape == (3, 256)


def test_fit_trains_an_sae_with_sae_lens_and_it_round_trips_through_its_format(model, tmp_path):
    from sae_lens import SAE

    acts = saes.cached_activations(SAES[DEFAULT_SAE], model, 3000, tmp_path / "acts")
    sae, history = saes.fit(acts, "topk", d_sae=64, sparsity=4, tokens=2048, batch=256, progress=False)
    assert len(history) == 8 and history[-1]["l0"] == pytest.approx(4)
    sae.save_model(tmp_path / "sae")
    loaded = SAE.load_from_disk(str(tmp_path / "sae"))
    x = acts[:100].float()
    assert torch.allclose(loaded(x), sae(x), atol=1e-5)


def test_unknown_architecture_names_the_three_that_train():
    with pytest.raises(ValueError, match="'topk', 'jumprelu' or 'standard'"):
        saes.training_sae("gated", 256, 64, 4)


def test_sae_lens_runner_trains_with_our_model_in_the_loop(model):
    from sae_lens import LanguageModelSAETrainingRunner

    spec = SAES[DEFAULT_SAE]
    cfg = saes.runner_config(spec, tokens=2048, batch=256)
    sae = LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=saes.token_dataset(14, 24)).run()
    assert sae.cfg.d_in == 256


def test_sae_lens_activation_cache_uses_our_model_not_the_hub(model, tmp_path):
    dataset = saes.sae_lens_cache(SAES[DEFAULT_SAE], model, 4096, tmp_path / "cache")
    assert len(dataset) >= 4096 // saes.N_CTX
    import sae_lens.cache_activations_runner as runner

    assert runner.load_model is not None and runner.load_model.__name__ == "load_model"  # put back


def test_every_zoo_model_with_mlps_has_a_default_sae_on_its_last_layer():
    for model_name, name in saes.DEFAULT_SAES.items():
        assert SAES[name].model == model_name and SAES[name].hook.endswith("hook_resid_post")


def test_load_sae_for_a_model_without_an_sae_names_those_that_have_one():
    with pytest.raises(ValueError, match="storyworld-4l.*gpt2-small"):
        saes.load_sae_for("storyworld-attn2l")


def test_a_hub_sae_without_the_hub_fails_in_one_sentence(monkeypatch):
    monkeypatch.setattr("utils.model_zoo.models.hub_unreachable", lambda: "offline")
    with pytest.raises(saes.SAEError, match="not reachable"):
        saes.load_sae_for("gpt2-small")


def test_decoder_rows_are_unit_directions(model):
    sae = saes.load_sae(DEFAULT_SAE, "cpu")
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(sae.cfg.d_sae), atol=1e-4)


def test_a_cut_card_is_named_with_how_to_restore_or_rewrite_it(copied_sae):
    card = copied_sae / "card.json"
    card.write_text(card.read_text()[:30])
    with pytest.raises(saes.SAEError) as e:
        saes.load_sae(DEFAULT_SAE, folder=copied_sae)
    message = str(e.value)
    assert message.startswith(f"the card of the SAE {DEFAULT_SAE} is not valid JSON ({card}, line "), message
    assert f"python -m utils.cards.sae_cards {DEFAULT_SAE}" in message and "\n" not in message


@pytest.fixture
def sae_folders(tmp_path, monkeypatch):
    """runs/ and data/saes/ of the test's own, the latter holding a copy of the default SAE (returned)."""
    shutil.copytree(saes.SAES_DIR / DEFAULT_SAE, tmp_path / "saes" / DEFAULT_SAE)
    monkeypatch.setattr(saes, "SAES_DIR", tmp_path / "saes")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(saes, "ROWS_PER_CHUNK", 8)
    return tmp_path / "saes" / DEFAULT_SAE


def test_an_sae_trained_without_out_goes_under_runs_and_the_zoos_copy_takes_a_flag(sae_folders, capsys):
    before = {p.name: p.read_bytes() for p in sae_folders.iterdir()}
    assert saes.main([DEFAULT_SAE, "--tokens", "2048"]) == 0
    assert {p.name: p.read_bytes() for p in sae_folders.iterdir()} == before
    out = paths.RUNS / "saes" / DEFAULT_SAE
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith(f"wrote {out} (the zoo's own {DEFAULT_SAE} is unchanged); load it with "), last
    assert f"load_sae('{DEFAULT_SAE}', folder='{out}')" in last and f"write_card('{DEFAULT_SAE}', '{out}')" in last
    sae = saes.load_sae(DEFAULT_SAE, "cpu", folder=out)  # checked against the card training wrote
    assert sae.cfg.d_sae == SAES[DEFAULT_SAE].d_sae
    assert saes.main([DEFAULT_SAE, "--tokens", "2048", "--out", str(sae_folders)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is the zoo's own" in last and "--replace-zoo-sae" in last, last
    assert {p.name: p.read_bytes() for p in sae_folders.iterdir()} == before


def test_a_full_disk_while_writing_an_sae_leaves_nothing_half_written_and_says_so(sae_folders, monkeypatch, capsys):
    import errno
    import os

    from sae_lens.saes.sae import SAE

    def full(self, folder, *args, **kwargs):
        (Path(folder) / saes.WEIGHTS).write_bytes(b"half an SAE")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(SAE, "save_model", full)
    out = paths.RUNS / "saes" / DEFAULT_SAE
    assert saes.main([DEFAULT_SAE, "--tokens", "2048"]) == 1
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith(
        f"python -m utils.model_zoo.saes: error: the disk holding {out} is full: the SAE was not "
    ), last
    assert "free some space on that disk and run the same command again" in last
    assert not out.exists()
