"""Which heads matter for IOI, read for every head from a few passes (``ioi_head_attribution``): its
direct attribution and real patching agree with the full circuit measurement (``ioi_circuit``) on
the same prompts, and attribution patching estimates the patching of the heads that matter."""

import pytest

from utils import seeds
from utils.metrics.circuit import ioi_circuit_one_order, ioi_head_attribution
from utils.model_zoo.models import load_model


@pytest.fixture(scope="module")
def attn2l():
    return load_model("storyworld-attn2l", device="cpu")


def test_direct_attribution_and_patching_are_those_of_the_full_circuit_on_the_same_prompts(attn2l):
    n = 8
    quick = ioi_head_attribution(attn2l, seeds.TEST_SAMPLE, n=n, top=3)
    full = [ioi_circuit_one_order(attn2l, seeds.TEST_SAMPLE, seeds.CIRCUIT_REFERENCE, n, f) for f in (True, False)]
    H = attn2l.cfg.n_heads
    for layer in range(attn2l.cfg.n_layers):
        for h in range(H):
            both = [c["heads"][f"L{layer}H{h}"]["direct"] for c in full]
            assert quick["direct"][layer][h] == pytest.approx(sum(both) / 2, abs=2e-3)
    chosen = {r["head"]: r for r in quick["top_direct"] + quick["top_attribution"]}
    assert 3 <= len(chosen) <= 6
    for name, r in chosen.items():
        assert r["patching"] == pytest.approx(sum(c["heads"][name]["patching"] for c in full) / 2, abs=2e-3)
    assert quick["clean_logit_diff"] == pytest.approx(sum(c["clean_logit_diff"] for c in full) / 2, abs=2e-3)


def test_attribution_patching_ranks_the_head_patching_finds_first(attn2l):
    quick = ioi_head_attribution(attn2l, seeds.TEST_SAMPLE, n=8, top=2)
    best = quick["top_attribution"][0]
    patched = [r["patching"] for r in quick["top_direct"] + quick["top_attribution"]]
    assert best["patching"] == max(patched)  # the first by the estimate is the first for real
    # A first-order estimate: it has the right sign, and here it finds more than half of the effect.
    assert best["attribution"] > 0.5 * best["patching"] > 0
