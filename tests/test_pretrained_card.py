"""SmolLM2-135M's card: written from measurements, rendered from its ``card.json``, pinned to the
weights it was measured on, and its numbers found again on a fresh small held-out sample."""

from __future__ import annotations

import math

import pytest

from utils import load_model, paths, seeds
from utils.cards import model_cards
from utils.cards import pretrained_card as pc
from utils.model_zoo import pretrained

CARD = pc.read_card()
# The fresh re-measurement: smaller than the card's own sample, on a seed none of its samples used.
SMALL = {"docs": 20, "transfer": 48, "random": 6, "ioi_pairs": 4}


@pytest.fixture(scope="module")
def fresh():
    model = load_model(pc.NAME, device="cpu")
    return pc.measure(model, seeds.TEST_SAMPLE, SMALL, progress=False, steps=("loss", "ioi", "heads", "ioi heads"))


def test_the_card_pins_the_weights_it_measured_and_its_folder_holds_no_weights():
    src = CARD["source"]
    assert (src["wheel_sha256"], src["gguf_sha256"]) == (pretrained.WHEEL_SHA256, pretrained.GGUF_SHA256)
    assert CARD["weights_sha256"] == src["weights_sha256"] == pretrained.WEIGHTS_SHA256
    tokenizer = pretrained.converted_folder() / "tokenizer.json"
    assert CARD["tokenizer_sha256"] == pretrained.sha256_file(tokenizer)
    assert sorted(p.name for p in pc.folder().iterdir()) == ["README.md", "card.json"]
    assert CARD["vocabulary"] == CARD["architecture"]["d_vocab"] == 49_152


def test_the_cards_readme_is_the_rendering_of_its_card_json():
    assert pc.card_markdown(CARD) == (pc.folder() / "README.md").read_text(), (
        f"data/models/{pc.NAME}/README.md is not the rendering of its card.json: restore both with "
        f"git checkout -- data/models/{pc.NAME}/ (a maintainer re-measures with {pc.COMMAND} --write-card)"
    )


def test_every_ranged_number_names_its_sample_and_has_a_range_from_other_held_out_samples():
    ev, fr = CARD["eval"], CARD["fresh"]
    assert ev["seed"] == seeds.EVAL and ev["sizes"] == pc.CARD_SIZES
    assert seeds.EVAL not in fr["seeds"] and seeds.TEST_SAMPLE not in fr["seeds"]
    assert all(seeds.is_held_out(s) for s in fr["seeds"]) and len(set(fr["seeds"])) == len(fr["seeds"]) >= 3
    for key in pc.RANGED:
        values = fr["values"][key]
        assert len(values) == len(fr["seeds"]) and not any(math.isnan(v) for v in [ev[key], *values]), key
        assert fr["range"][key] == [min(values), max(values)], key


def test_the_readme_zoo_table_lists_smollm2_as_pretrained_elsewhere_with_its_cards_numbers():
    row = model_cards.pretrained_row(CARD)
    assert "pretrained elsewhere" in row and f"{CARD['eval']['loss']:.3f} per token of its own" in row
    assert row in paths.README.read_text()


def spread(key: str, widen: float) -> tuple[float, float]:
    """The card's value and its fresh samples' range together, widened for a smaller sample."""
    lo, hi = CARD["fresh"]["range"][key]
    value = CARD["eval"][key]
    return min(lo, value) - widen, max(hi, value) + widen


def test_the_cards_numbers_agree_with_a_fresh_small_sample(fresh):
    ev = CARD["eval"]
    assert fresh["tokens"] > 600
    # The gap (loss minus the generator's floor on the same documents) within three of the fresh
    # sample's standard errors, plus a floor; the per-character loss likewise.
    assert abs(fresh["gap"] - ev["gap"]) <= 0.1 + 3 * fresh["gap_se"]
    assert abs(fresh["gap_per_character"] - ev["gap_per_character"]) <= (0.1 + 3 * fresh["gap_se"]) / 3
    # IOI: three binomial standard errors of the small sample; its logit difference in the card's spread.
    p = ev["ioi_accuracy"]
    assert abs(fresh["ioi_accuracy"] - p) <= 0.02 + 3 * math.sqrt(p * (1 - p) / fresh["ioi_prompts"])
    lo, hi = spread("ioi_logit_diff", 0.8)
    assert lo <= fresh["ioi_logit_diff"] <= hi
    # The same induction head, and the same head writing the answer most directly.
    assert fresh["induction_head"] == ev["induction_head"]
    lo, hi = spread("induction_score", 0.05)
    assert lo <= fresh["induction_score"] <= hi
    assert fresh["ioi_top_direct_head"] == ev["ioi_top_direct_head"]
    lo, hi = spread("ioi_top_direct", 0.2)
    assert lo <= fresh["ioi_top_direct"] <= hi
