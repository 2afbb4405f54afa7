import json
from pathlib import Path

rows = []
for v in ("exp-base", "exp-seed106", "exp-heads8"):
    rows += [json.loads(l) for l in open(f"runs/{v}.jsonl")]
every = {json.loads(l)["variant"]: json.loads(l) for l in open("runs/every-draw.jsonl") if l.startswith("{")}
card = json.load(open("data/models/countdown-llama/card.json"))["eval"]
out = []
w = out.append
w("Countdown-llama design changes: the card's criteria along training, for three runs besides the committed one")
w("")
w("Each run: utils.train with the registry's countdown-llama Spec changed as named, 1 torch thread (two runs")
w("side by side on the 2-core machine), bf16 autocast, 20M tokens on the full cosine schedule; after every chunk")
w("the checkpoint (still mid-schedule) is measured with utils.metrics.countdown.countdown_card on 1000 held-out")
w("traces of the card's seed (9000), the card's own measurement at half its sample.")
w("")
w("  base      the committed recipe (seed 104, 4 heads of 32); the committed model ran it on 2 threads, this")
w("            run on 1: the two agree to 1e-5 in loss at step 10 and part by step 50 (the thread count changes")
w("            float rounding), so this is a second run of the same recipe")
w("  seed106   the committed recipe with seed 106")
w("  heads8    8 heads of 16 instead of 4 of 32 (same width and parameters): twice the heads to draw from")
w("")
hdr = f"{'run':8} {'tokens':>6} {'met':>5}  {'P(this) drop':>12} {'rand3 drop':>10} {'overlap':>7}  {'top3 by score':28} {'top3 by single ablation':28} missed"
w(hdr)
w("-" * len(hdr))
hs = lambda x: ", ".join(f"L{l}H{h}" for l, h in x)
w(
    f"{'committed':8} {'20M':>6} {'15/18':>5}  {card['neuron_zeroing_drop']:12.3f} {card['random3_ablation_drop']:10.3f} {card['top3_overlap']:7d}  {hs(card['top3_receptive_field']):28} {hs(card['top3_single_ablation']):28} (its card: 2000 traces)"
)
for r in rows:
    name = r["variant"]
    w(
        f"{name:8} {str(int(r['tokens_M'])) + 'M':>6} {str(r['met']) + '/18':>5}  {r['neuron_zeroing_drop']:12.3f} {r['random3_ablation_drop']:10.3f} {r['top3_overlap']:7d}  {hs(r['top3_receptive_field']):28} {hs(r['top3_single_ablation']):28} {', '.join(m for m in r['missed'])}"
    )
w("")
w(
    "Heads that matter alone at 20M tokens (drop in valid verdicts judged right when the head alone is ablated, >= 5 points):"
)
w(
    f"  committed: "
    + ", ".join(
        f"L{l}H{h} {100 * v:.0f}"
        for l, row in enumerate(card["single_head_drop"])
        for h, v in enumerate(row)
        if v >= 0.05
    )
)
for r in rows:
    if r["tokens_M"] == 20.0:
        w(
            f"  {r['variant']}: "
            + ", ".join(
                f"L{l}H{h} {100 * v:.0f}"
                for l, row in enumerate(r["single_head_drop"])
                for h, v in enumerate(row)
                if v >= 0.05
            )
        )
w("")
w("Random heads at 20M tokens: the mean cost of three random heads (outside the score's top 3) over the card's 10")
w("draws against its mean over every draw (all sets of 3 from the other heads; heads8: a seeded sample of 500),")
w("on the same valid sites:")
w(
    f"  committed: 10 draws {card['random3_ablation_drop']:.3f}, every draw {card['random3_ablation_drop_every_draw']:.3f} ({card['random3_draws_every']} draws, its card)"
)
for k, e in every.items():
    w(
        f"  {k}: 10 draws {e['random3_ablation_drop']:.3f}, every draw {e['random3_ablation_drop_every_draw']:.3f} ({e['draws']} draws)"
    )
w("")
w("What this says:")
w("- neuron_zeroing_drop (>= 0.5) is missed by every run at every length: 0.142 for the committed model, at most")
w("  0.065 for the others. On the committed model lesson 08 measures why: the margin is large, and with the aligned")
w("  neurons zeroed the final RMSNorm scales the rest of the stream back up.")
w("- random3_ablation_drop and top3_overlap depend on the run, not on the recipe: which heads matter alone changes")
w("  from run to run and, mid-schedule, from checkpoint to checkpoint. A pass over 10 draws can be luck: base's")
w("  0.014 is 0.199 over every draw. Over every draw the committed model (0.101) is the closest to the bound.")
w("- 8 heads of 16 did not spread the job thinner: two heads that matter alone (56 and 75 points) are still")
w("  outside the score's top 3.")
w("So the committed model stays; its card records the three misses with these measurements.")
Path("benchmarks/experiments/countdown-design.log").write_text("\n".join(out) + "\n")
print("\n".join(out))
