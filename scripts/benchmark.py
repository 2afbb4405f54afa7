"""Measure the zoo's speed on this machine and record it: ``python scripts/benchmark.py``.

Writes ``benchmarks/results.json`` (every number, with the machine) and
``benchmarks/RESULTS.md`` (the table the README links). Speed budgets are checked here, by
measurement, never by timed tests.

* load: seconds for ``load_model(name)`` (checksum included), median of 3, after one warm-up
  load so that imports are not counted.
* forward: tokens per second of a no-grad forward pass, batch 16 × 128 tokens.
* training: tokens per second of a full training step (forward, backward, AdamW) at the
  model's real batch shape, as in ``utils.model_zoo.train``: in float32, and with bfloat16 autocast
  where this machine computes bfloat16 natively (what ``utils.model_zoo.train`` then uses).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a plain script from anywhere

from utils.model_zoo import train as tr  # noqa: E402
from utils.model_zoo.models import load_model, zoo  # noqa: E402
from utils.model_zoo.registry import SPECS, Spec  # noqa: E402
from utils.paths import BENCHMARKS as OUT  # noqa: E402


def timed(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def forward_tokens_per_s(model, vocab: int) -> float:
    x = torch.randint(1, vocab, (16, 128))
    with torch.no_grad():
        model(x)  # warm-up
        return x.numel() / timed(lambda: model(x))


def training_tokens_per_s(spec: Spec, vocab: int, precision: str = "fp32", steps: int = 3) -> float:
    model = tr.build_model(spec, vocab)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = torch.randint(1, vocab, (spec.batch, spec.n_ctx + 1))

    def step():
        loss = tr.lm_loss(model, rows, precision)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    return rows[:, :-1].numel() / timed(step, steps)


def main() -> int:
    torch.set_num_threads(os.cpu_count() or 1)
    bf16 = tr.pick_precision("cpu") == "bf16"
    rows = []
    for name in zoo():
        load_model(name, device="cpu")  # warm-up: imports, file cache
        load_s = timed(lambda name=name: load_model(name, device="cpu"))
        model = load_model(name, device="cpu")
        vocab = model.cfg.d_vocab  # each corpus has its own tokenizer
        fwd = forward_tokens_per_s(model, vocab)
        spec = SPECS.get(name)
        trn = training_tokens_per_s(spec, vocab) if spec else None
        trn16 = training_tokens_per_s(spec, vocab, "bf16") if spec and bf16 else None
        rows.append(
            {
                "model": name,
                "load_s": round(load_s, 3),
                "forward_tokens_per_s": round(fwd),
                "train_tokens_per_s": round(trn) if trn else None,
                "train_bf16_tokens_per_s": round(trn16) if trn16 else None,
            }
        )
        print(rows[-1], flush=True)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "native_bf16": bf16,
        "date": time.strftime("%Y-%m-%d"),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"machine": machine, "models": rows}, indent=1) + "\n")
    lines = [
        "# Benchmark results",
        "",
        f"Measured by `python scripts/benchmark.py` on {machine['date']}: {machine['cores']} cores "
        f"({machine['cpu']}), {machine['threads']} torch threads, torch {machine['torch']}, "
        f"CUDA {'yes' if machine['cuda'] else 'no'}, native bfloat16 {'yes' if bf16 else 'no'} "
        "(`utils.model_zoo.train` trains in bf16 autocast where it is native). Raw numbers: `results.json`.",
        "",
        "| model | load (s) | forward (tokens/s, 16×128) | training, float32 (tokens/s) "
        "| training, bf16 autocast (tokens/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        trn, trn16 = (f"{r[k]:,}" if r[k] else "n/a" for k in ("train_tokens_per_s", "train_bf16_tokens_per_s"))
        lines.append(f"| {r['model']} | {r['load_s']:.2f} | {r['forward_tokens_per_s']:,} | {trn} | {trn16} |")
    (OUT / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
