"""How much faster do two one-thread lanes rebuild the zoo than one model after another?

Trains every zoo model from scratch for a short budget (``--steps``, default 60) in a temporary
folder, twice: one model after another with every thread (as the committed weights were
trained), then in ``make zoo``'s two lanes of one thread each, side by side. Each run's own
loss log gives its training speed after its first 10 steps (startup left out); the full rebuild
time of each way is projected from those speeds and each model's token budget. Writes
``benchmarks/zoo_lanes.json`` and prints a table.

    .venv/bin/python scripts/zoo_lanes_speed.py [--steps 60]

A projection, not the rebuild itself: ``make zoo`` (``utils/course/rebuild_zoo.py --record``)
times the real thing and writes ``benchmarks/zoo_rebuild.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.course.rebuild_zoo import expected_seconds, plan_lanes  # noqa: E402
from utils.model_zoo.registry import SPECS  # noqa: E402
from utils.paths import BENCHMARKS, ROOT  # noqa: E402

OUT = BENCHMARKS / "zoo_lanes.json"


def train_short(name: str, steps: int, threads: int, folder: Path) -> float:
    """Train ``name`` for ``steps`` steps with ``threads`` threads; its tokens per second after step 10."""
    spec = SPECS[name]
    tokens = steps * spec.batch * spec.n_ctx
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "utils.model_zoo.train", name, "--tokens", str(tokens), "--device", "cpu"]
    command += ["--runs", str(folder / "runs"), "--out", str(folder / "models" / name)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    with (folder / "models" / name / "train_log.csv").open() as f:
        rows = [r for r in csv.DictReader(f)]
    first = next(r for r in rows if int(r["step"]) >= 10)
    last = rows[-1]
    return (int(last["tokens"]) - int(first["tokens"])) / (float(last["seconds"]) - float(first["seconds"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="training steps per model and run (default 60)")
    args = ap.parse_args(argv)
    names = sorted(SPECS)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        alone = {n: train_short(n, args.steps, threads, Path(tmp) / "alone") for n in names}
        alone_wall = time.time() - t
        plan = plan_lanes({n: expected_seconds(n) for n in names}, 2)
        lanes: dict[str, float] = {}

        def lane(models: list[str], k: int) -> None:
            for n in models:
                lanes[n] = train_short(n, args.steps, 1, Path(tmp) / f"lane-{k}")

        t = time.time()
        workers = [threading.Thread(target=lane, args=(models, k)) for k, models in enumerate(plan)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        lanes_wall = time.time() - t
    full = {n: SPECS[n].tokens for n in names}
    sequential_h = sum(full[n] / alone[n] for n in names) / 3600
    lanes_h = max(sum(full[n] / lanes[n] for n in models) for models in plan) / 3600
    record = {
        "cpu_threads": threads,
        "steps": args.steps,
        "tokens_per_s": {n: {"alone": round(alone[n]), "in_a_lane": round(lanes[n])} for n in names},
        "lanes": plan,
        "short_runs_wall_s": {"one_after_another": round(alone_wall), "two_lanes": round(lanes_wall)},
        "projected_models_hours": {"one_after_another": round(sequential_h, 2), "two_lanes": round(lanes_h, 2)},
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{'model':20s} {'alone, ' + str(threads) + ' threads':>20s} {'in a lane, 1 thread':>20s}  (tokens/s)")
    for n in names:
        print(f"{n:20s} {alone[n]:20,.0f} {lanes[n]:20,.0f}")
    print(f"lanes: {plan}")
    print(
        f"projected training time of every model: {sequential_h:.1f} h one after another, "
        f"{lanes_h:.1f} h in two lanes (written to {OUT.relative_to(ROOT)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
