"""Pilot runs for the belief-stories model: how small a model, and how many tokens, answer
belief questions, false beliefs included?

Trains a Llama-style model on belief stories with the zoo's recipe (AdamW, warmup then cosine,
bf16 autocast on the CPU) and every ``--every`` steps measures accuracy by question kind on
1000 held-out two-character stories and on 1000 three-character ones (never trained on).

    .venv/bin/python benchmarks/experiments/beliefs_pilot.py --layers 4 --width 128 --tokens 8e6
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from utils.corpora import beliefs  # noqa: E402
from utils.metrics import beliefs as measure  # noqa: E402
from utils.model_zoo.packing import PackedStream  # noqa: E402
from utils.model_zoo.registry import Spec  # noqa: E402
from utils.model_zoo.train import build_model, lm_loss, lr_at  # noqa: E402

HELD_OUT_SEED = 9001  # no training stream uses it


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--tokens", type=float, default=8e6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-ctx", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2))
    ap.add_argument("--out", type=Path, help="save the trained model here (save_pretrained, with the tokenizer)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = Spec(
        f"beliefs-pilot-{args.layers}l{args.width}",
        "llama",
        dict(
            num_hidden_layers=args.layers,
            hidden_size=args.width,
            num_attention_heads=args.heads,
            num_key_value_heads=args.heads,
            intermediate_size=4 * args.width,
            rope_theta=10000.0,
        ),
        seed=args.seed,
        data_seed=31,
        tokens=int(args.tokens),
        lr=args.lr,
        batch=args.batch,
        n_ctx=args.n_ctx,
        corpus="beliefs",
    )
    tok = beliefs.load_tokenizer()
    model = build_model(spec, len(tok))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.95),
    )
    two = measure.questions(beliefs.sample_stories(HELD_OUT_SEED, 1000), tok)
    three = measure.questions(beliefs.sample_stories(HELD_OUT_SEED, 1000, more_characters=True), tok)
    data = PackedStream(spec.data_seed, spec.n_ctx, tok, 0, "beliefs")
    steps = math.ceil(spec.tokens / (spec.batch * spec.n_ctx))
    params = sum(p.numel() for p in model.parameters())
    print(f"{spec.name}: {params / 1e6:.2f}M parameters, {steps} steps of {spec.batch}x{spec.n_ctx}", flush=True)
    t0, smooth = time.time(), None
    for step in range(1, steps + 1):
        rows = data.batch(spec.batch)
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1, steps, spec)
        loss = lm_loss(model, rows, "bf16")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % args.every == 0 or step == steps:
            model.eval()
            a2 = measure.accuracy_by_kind(measure.correct(model, two), two.stories)
            a3 = measure.accuracy_by_kind(measure.correct(model, three), three.stories)
            model.train()
            show = lambda acc: " ".join(f"{k} {v:.3f}" for k, v in acc.items())  # noqa: E731
            print(
                f"step {step} tokens {step * spec.batch * spec.n_ctx / 1e6:.1f}M loss {smooth:.3f} "
                f"{time.time() - t0:.0f}s | two: {show(a2)} | three: {show(a3)}",
                flush=True,
            )
    if args.out:
        model.save_pretrained(args.out, safe_serialization=True)
        tok.save_pretrained(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
