"""``make zoo``: rebuild the whole zoo from scratch, independent models side by side.

    python -m utils.course.rebuild_zoo              # two lanes of one thread each (the default)
    python -m utils.course.rebuild_zoo --lanes 1    # one model after another, all threads
    python -m utils.course.rebuild_zoo --record     # also write the timing to benchmarks/zoo_rebuild.json

First the two tokenizers; then every zoo model, each trained (``utils.model_zoo.train
--replace-zoo-model``, over the committed copy in ``data/models/``) and then measured for its
card (``utils.cards.model_cards --write-card``), the models dealt into lanes that run at the
same time, longest first (by the training time on each card); then the SAEs (they need the
rebuilt models; ``utils.model_zoo.saes all --replace-zoo-sae``) and their cards. Each lane is one process at a time with
one thread: on two cores, two one-thread lanes keep both cores busy through the parts of a
training step that one process runs on one core anyway.

Every step is a ``python -m`` command of its own, resumable as it is: run ``make zoo`` again after
an interruption and each training run continues from its last checkpoint. Each lane's output
goes to ``runs/zoo-lanes/lane-K.log``; the driver prints a line as each step starts and ends.

The thread count can be part of the recipe: a model trained with another number of threads may
sum its floating-point products in another order and come out a sibling of the committed one (the
same recipe, slightly different weights). Each card records the threads its weights were trained
with (``training.device``). A full rebuild in two one-thread lanes gave back every committed model
byte for byte except ``storyworld-4l``, the GPT-2-style one (``--record`` keeps the timing in
``benchmarks/zoo_rebuild.json``; the README says which came back).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from utils.model_zoo.registry import SPECS, TRANSCODERS
from utils.paths import BENCHMARKS, MODELS, ROOT, RUNS

LOGS = RUNS / "zoo-lanes"
RECORD = BENCHMARKS / "zoo_rebuild.json"


def expected_seconds(name: str) -> float:
    """How long a model took to train last time (its card), else its token budget at 10k tokens/s."""
    card = MODELS / name / "card.json"
    if card.exists():
        return float(json.loads(card.read_text())["training"]["seconds"])
    return SPECS[name].tokens / 10_000


def plan_lanes(costs: dict[str, float], lanes: int) -> list[list[str]]:
    """Deal the models into ``lanes`` lists, longest first, each to the lane with least work so far."""
    if lanes < 1:
        raise ValueError(f"the number of lanes must be at least 1, not {lanes}")
    plan: list[list[str]] = [[] for _ in range(lanes)]
    load = [0.0] * lanes
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        k = load.index(min(load))
        plan[k].append(name)
        load[k] += costs[name]
    return [lane for lane in plan if lane]


def model_steps(name: str) -> list[list[str]]:
    """The commands that rebuild one model and its card, in order (training writes over the zoo's
    own copy only when told to)."""
    return [
        ["-m", "utils.model_zoo.train", name, "--replace-zoo-model"],
        ["-m", "utils.cards.model_cards", name, "--write-card"],
    ]


# The SAEs and transcoders (over the zoo's own copies) and their cards, once every model is rebuilt.
SAE_STEPS = (
    ["-m", "utils.model_zoo.saes", "all", "--replace-zoo-sae"],
    ["-m", "utils.cards.sae_cards"],
    *(["-m", "utils.model_zoo.transcoders", name, "--replace-zoo"] for name in TRANSCODERS),
    ["-m", "utils.cards.transcoder_cards"],
)


def lane_environment(lanes: int) -> dict[str, str]:
    """The environment a lane's commands run in: one thread each when lanes run side by side."""
    env = dict(os.environ)
    if lanes > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_step(args: list[str], env: dict[str, str], log: Path) -> int:
    """Run ``python <args>`` from the repository root, its output appended to ``log``."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ python {' '.join(args)}\n")
        out.flush()
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=out).returncode


def rebuild_models(
    plan: list[list[str]], run: Callable[[list[str], dict[str, str], Path], int] = run_step
) -> list[dict]:
    """Run the lanes of ``plan`` side by side; returns a row per step (lane, model, command,
    seconds, exit code). A failed step ends its lane; the other lanes go on."""
    LOGS.mkdir(parents=True, exist_ok=True)
    env = lane_environment(len(plan))
    rows: list[dict] = []
    lock = threading.Lock()

    def lane(k: int, names: list[str]) -> None:
        log = LOGS / f"lane-{k}.log"
        for name in names:
            for args in model_steps(name):
                step = " ".join(args[1:])
                with lock:
                    print(f"lane {k}: {step} ...", flush=True)
                t = time.time()
                code = run(args, env, log)
                row = {"lane": k, "model": name, "step": step, "seconds": round(time.time() - t, 1), "exit": code}
                with lock:
                    rows.append(row)
                    print(
                        f"lane {k}: {step} {'done' if code == 0 else 'FAILED'} in {row['seconds'] / 60:.1f} min"
                        + ("" if code == 0 else f" (see {log})"),
                        flush=True,
                    )
                if code != 0:
                    return

    threads = [threading.Thread(target=lane, args=(k, names)) for k, names in enumerate(plan, start=1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.course.rebuild_zoo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lanes", type=int, default=2, help="models trained side by side (default 2, one thread each)")
    ap.add_argument("--record", action="store_true", help=f"write the timing to {RECORD.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    if args.lanes < 1:
        ap.error(f"--lanes must be at least 1, not {args.lanes}")
    start = time.time()
    log = LOGS / "tokenizers-and-saes.log"
    LOGS.mkdir(parents=True, exist_ok=True)
    for step in (["-m", "utils.corpora.tokenizer"], ["-m", "utils.corpora.countdown", "tokenizer"]):
        if run_step(step, dict(os.environ), log):
            print(f"python {' '.join(step)} failed (see {log})", file=sys.stderr)
            return 1
    plan = plan_lanes({name: expected_seconds(name) for name in SPECS}, args.lanes)
    print("lanes: " + "; ".join(f"{k}: {', '.join(names)}" for k, names in enumerate(plan, start=1)), flush=True)
    t = time.time()
    rows = rebuild_models(plan)
    models_s = time.time() - t
    if any(r["exit"] for r in rows):
        print("a model failed to build; its lane's log says why (run make zoo again to resume)", file=sys.stderr)
        return 1
    t = time.time()
    for step in SAE_STEPS:
        if run_step(step, dict(os.environ), log):
            print(f"python {' '.join(step)} failed (see {log})", file=sys.stderr)
            return 1
    saes_s = time.time() - t
    total = time.time() - start
    print(
        f"the zoo rebuilt in {total / 60:.0f} min (models {models_s / 60:.0f} min in {len(plan)} lanes, "
        f"SAEs {saes_s / 60:.0f} min)"
    )
    if args.record:
        RECORD.write_text(
            json.dumps(
                {
                    "lanes": plan,
                    "steps": rows,
                    "models_seconds": round(models_s),
                    "saes_seconds": round(saes_s),
                    "total_seconds": round(total),
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
