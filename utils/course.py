"""The course's main job on the embedded default: ``python -m utils.course``.

For now (issue 2) it checks and summarises the model zoo: every built model is loaded
offline, its weights are checked against the card's sha256, a forward pass on held-out
Storyworld documents is compared with the card's loss, and a table is printed. It exits
non-zero when a model fails to load or disagrees with its card.
"""

from __future__ import annotations

import sys
import time

from utils import storyworld
from utils.evaluate import EVAL_SEED, check_targets, heldout_loss
from utils.models import ZOO, load_model, read_card, zoo

QUICK_DOCS = 200
GAP_TOLERANCE = 0.05  # nats/token between the card's gap (2000 docs) and this quick look (200)


def main() -> int:
    built = zoo()
    missing = [n for n in ZOO if n not in built]
    print(f"Model zoo: {len(built)} built ({', '.join(built)})"
          + (f"; not built yet: {', '.join(missing)}" if missing else ""))
    docs = storyworld.sample_docs(EVAL_SEED + 50, QUICK_DOCS)
    header = f"{'model':20s} {'params':>9s} {'load s':>7s} {'loss':>7s} {'card':>7s} {'floor':>7s} {'gap':>7s}  targets"
    print(header)
    print("-" * len(header))
    status = 0
    for name in built:
        card = read_card(name)
        t = time.time()
        try:
            model = load_model(name, device="cpu")
        except Exception as e:  # report every model, then fail
            print(f"{name:20s} FAILED TO LOAD: {e}")
            status = 1
            continue
        load_s = time.time() - t
        quick = heldout_loss(model, docs)
        ev = card["eval"]
        targets = check_targets(name, ev)
        met = sum(t["met"] for t in targets.values())
        unmet = [m for m, t in targets.items() if not t["met"]]
        agree = abs(quick["gap"] - ev["gap"]) <= GAP_TOLERANCE
        status |= not agree
        print(f"{name:20s} {card['n_params']:9,d} {load_s:7.2f} {quick['loss']:7.3f} {ev['loss']:7.3f} "
              f"{ev['floor']:7.3f} {ev['gap']:7.3f}  {met}/{len(targets)} met"
              + (f" (not: {', '.join(unmet)})" if unmet else "")
              + ("" if agree else "  GAP DISAGREES WITH CARD"))
    print(f"\nloss: {QUICK_DOCS} fresh held-out documents (seed {EVAL_SEED + 50}); card: "
          f"the card's own 2000-document measurement. Details: data/models/<name>/README.md")
    return status


if __name__ == "__main__":
    sys.exit(main())
