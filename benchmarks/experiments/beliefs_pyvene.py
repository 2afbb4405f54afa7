"""Does pyvene (the field's library for interchange interventions and DAS) agree with the course's
hooks on a belief-stories model? Run with pyvene importable (it is not part of the course's stack):

    PYTHONPATH=<pyvene> .venv/bin/python benchmarks/experiments/beliefs_pyvene.py runs/beliefs-pilot

Compares, at every layer, pyvene's vanilla interchange of ``block_output`` at ``A`` (on the HF
model inside the bridge) with ``utils.metrics.beliefs.interchange`` at ``blocks.{l}.hook_resid_post``,
and fits a rank-2 subspace both ways (pyvene's LowRankRotatedSpaceIntervention and
``fit_subspace``) on the same pairs.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pyvene as pv  # noqa: E402
import torch  # noqa: E402

from utils.corpora import beliefs as b  # noqa: E402
from utils.metrics import beliefs as m  # noqa: E402
from utils.model_zoo.models import load_model  # noqa: E402


def main() -> int:
    model = load_model(sys.argv[1])
    hf = model.original_model
    tok = b.load_tokenizer()
    rng = random.Random(0)
    stories = [s for s in b.sample_stories(9301, 200) if b.answer_fill(s.plan) is not None]
    source = [b.with_new_cast(s, rng) for s in stories]
    qb, qs = m.questions(stories, tok), m.questions(source, tok)
    n = len(stories)
    for layer in range(model.cfg.n_layers):
        ours = m.interchange(model, qb, qs, m.resid_name(layer), qb.at, qs.at)
        cfg = pv.IntervenableConfig(
            [{"layer": layer, "component": "block_output", "unit": "pos", "intervention_type": pv.VanillaIntervention}]
        )
        im = pv.IntervenableModel(cfg, hf)
        theirs = []
        for i in range(n):  # pyvene takes one position list per example; rows differ in length
            base_ids = qb.tokens[i : i + 1, : qb.at[i] + 1]
            src_ids = qs.tokens[i : i + 1, : qs.at[i] + 1]
            _, out = im(
                {"input_ids": base_ids},
                [{"input_ids": src_ids}],
                {"sources->base": ([[[int(qs.at[i])]]], [[[int(qb.at[i])]]])},
            )
            theirs.append(out.logits[0, -1].detach())
        gap = (ours - torch.stack(theirs)).abs().max().item()
        print(f"layer {layer}: largest gap between pyvene and the course's interchange {gap:.2e}")
    t = time.time()
    target = qs.answer
    basis = m.fit_subspace(model, qb, qs, m.resid_name(1), qb.at, target, rank=2, source_pos=qs.at, steps=100)
    print(
        f"fit_subspace rank 2: {time.time() - t:.1f}s, IIA (source answer) "
        f"{m.agreement(m.interchange(model, qb, qs, m.resid_name(1), qb.at, qs.at, basis=basis), target):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
