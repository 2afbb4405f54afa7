"""Design-change experiments for countdown-llama: train a variant in chunks and measure the card's
criteria on the checkpoint after each chunk (1000 held-out traces, the card's seed).

usage: python benchmarks/experiments/countdown_design.py NAME [--chunks M1,M2,...]   (M: millions of tokens)
"""

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils import seeds, train  # noqa: E402
from utils.metrics.countdown import countdown_card  # noqa: E402
from utils.registry import COUNTDOWN_LLAMA, COUNTDOWN_TARGETS, SPECS  # noqa: E402
from utils.tokenizer import corpus_tokenizer  # noqa: E402

BASE = SPECS["countdown-llama"]
VARIANTS = {
    # 8 heads of 16 instead of 4 of 32: the same width, twice the heads to draw random ones from
    "heads8": dataclasses.replace(
        BASE, name="exp-heads8", config=dict(COUNTDOWN_LLAMA, num_attention_heads=8, num_key_value_heads=8)
    ),
    # the committed recipe, measured along training (the same seed and data)
    "base": dataclasses.replace(BASE, name="exp-base"),
    # twice the MLP: more neurons among which the verdict's writers may spread
    "mlp1024": dataclasses.replace(BASE, name="exp-mlp1024", config=dict(COUNTDOWN_LLAMA, intermediate_size=1024)),
    "seed106": dataclasses.replace(BASE, name="exp-seed106", seed=106),
}


def checkpoint_bridge(spec, run: Path):
    from transformer_lens.model_bridge import TransformerBridge

    tok = corpus_tokenizer(spec.corpus)
    model = train.build_model(spec, len(tok))
    state = load_file(run / train.CHECKPOINT)
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    tmp = Path(tempfile.mkdtemp())
    model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    return TransformerBridge.boot_transformers(str(tmp), device="cpu", tokenizer=tok, dtype=torch.float32).eval()


KEYS = list(COUNTDOWN_TARGETS) + [
    "loss",
    "gap",
    "probe_layer",
    "aligned_neurons",
    "target_head",
    "top3_receptive_field",
    "top3_single_ablation",
    "single_head_drop",
    "generation_rejects_random3",
    "p_this_valid",
]


def met(metric, value):
    op, thr = COUNTDOWN_TARGETS[metric]
    return value >= thr if op == ">=" else value <= thr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name", choices=VARIANTS)
    ap.add_argument("--chunks", default="4,8,12,16,20")
    ap.add_argument("--traces", type=int, default=1000)
    args = ap.parse_args()
    spec = VARIANTS[args.name]
    steps_total = -(-spec.tokens // (spec.batch * spec.n_ctx))
    run = Path("runs") / spec.name
    log = Path("runs") / f"{spec.name}.jsonl"
    done = 0
    for m in [float(x) for x in args.chunks.split(",")]:
        target_step = min(steps_total, round(m * 1e6 / (spec.batch * spec.n_ctx)))
        t0 = time.time()
        train.train(spec, run_dir=run, out_dir=run / "model", evaluate=False, max_steps=target_step - done)
        done = target_step
        t1 = time.time()
        torch.set_num_threads(1)
        bridge = checkpoint_bridge(spec, run)
        card = countdown_card(bridge, seeds.EVAL, seeds.PROBE_TRAIN, n_traces=args.traces)
        row = {
            "variant": args.name,
            "tokens_M": round(done * spec.batch * spec.n_ctx / 1e6, 2),
            "train_s": round(t1 - t0),
            "eval_s": round(time.time() - t1),
        }
        row.update({k: card.get(k) for k in KEYS})
        row["met"] = sum(met(k, card[k]) for k in COUNTDOWN_TARGETS)
        row["missed"] = [k for k in COUNTDOWN_TARGETS if not met(k, card[k])]
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            json.dumps({k: row[k] for k in ("variant", "tokens_M", "met", "missed", "train_s", "eval_s")}), flush=True
        )
        torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "2")))


if __name__ == "__main__":
    main()
