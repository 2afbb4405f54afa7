import sys, json, torch

sys.path.insert(0, "benchmarks/experiments")
from countdown_design import VARIANTS, checkpoint_bridge
from pathlib import Path
from utils import countdown, seeds
from utils.metrics import countdown as cdm

torch.set_num_threads(1)
torch.set_grad_enabled(False)
for name in sys.argv[1:]:
    spec = VARIANTS[name]
    m = checkpoint_bridge(spec, Path("runs") / spec.name)
    r = [json.loads(l) for l in open(f"runs/{spec.name}.jsonl")][-1]
    top3 = [tuple(h) for h in r["top3_receptive_field"]]
    S = cdm.verdict_sites(countdown.sample_traces(seeds.EVAL, 1000), m.tokenizer)
    te = S.subset(cdm.balanced(S, 250, seed=1))
    valid = te.subset(te.valid)
    L, H = m.cfg.n_layers, m.cfg.n_heads
    every = cdm.every_draw_of(L, H, 3, top3, seeds.EVAL)
    acc = lambda hs: (cdm.run_sites(m, valid, hooks=cdm.zero_heads(hs))["margin"] > 0).float().mean().item()
    before = acc([])
    mean = before - sum(acc(d) for d in every) / len(every)
    print(
        json.dumps(
            {
                "variant": name,
                "tokens_M": r["tokens_M"],
                "random3_ablation_drop": r["random3_ablation_drop"],
                "random3_ablation_drop_every_draw": mean,
                "draws": len(every),
            }
        ),
        flush=True,
    )
