"""The course's main job on the embedded default: ``python -m utils.course`` (``make course``).

1. Checks the model zoo: every built model loads offline, its weights match the card's
   sha256, and a forward pass on fresh held-out documents agrees with the card.
2. Executes every ``solutions/`` notebook headless, in order, and prints a table of wall
   time and the kernel's peak memory per notebook.

It exits non-zero if a model or a notebook fails, and it leaves every tracked file as it was:
each executed notebook is kept in ``build/course-runs/`` (ignored by git), stamped with what it
was run from, and the test suite checks those runs instead of executing the lessons again while
nothing they depend on has changed. ``--record`` (``make record``) also writes the measurement to
``benchmarks/notebooks.json`` and renders the README's notebook table from it.

``--reseed K`` (``make robustness``) instead runs each notebook on its own sample and on K fresh
ones, asserts recorded rather than raised (``utils.course.robustness``), prints which claims fail on
which sample with the spread of every asserted value, records the sweep in
``benchmarks/robustness.json`` and renders the README's column from it. It exits non-zero
when a claim fails on any sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from utils import seeds
from utils.cards.model_cards import check_targets
from utils.corpora import beliefs, countdown, storyworld
from utils.course import records, robustness
from utils.course.notebooks import NotebookError, execute, read_notebook
from utils.metrics.beliefs import story_loss
from utils.metrics.countdown import trace_loss
from utils.metrics.loss import heldout_loss
from utils.model_zoo.models import ZOO, corpus_of, load_model, read_card, zoo
from utils.paths import COURSE_RUNS, SOLUTIONS

QUICK_DOCS = 200
GAP_TOLERANCE = 0.05  # nats/token between the card's gap (2000 docs) and this quick look (200)


def check_zoo() -> int:
    """Load every built model and compare a quick held-out gap with its card; 1 if any fails."""
    built = zoo()
    missing = [n for n in ZOO if n not in built]
    print(
        f"Model zoo: {len(built)} built ({', '.join(built)})"
        + (f"; not built yet: {', '.join(missing)}" if missing else "")
    )
    docs = storyworld.sample_docs(seeds.COURSE_CHECK, QUICK_DOCS)
    header = f"{'model':20s} {'params':>9s} {'load s':>7s} {'gap':>7s} {'card':>7s}  targets"
    print(header + "\n" + "-" * len(header))
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
        if corpus_of(name) == "countdown":
            quick = trace_loss(model, countdown.sample_traces(seeds.COURSE_CHECK, QUICK_DOCS))
        elif corpus_of(name) == "beliefs":
            quick = story_loss(model, beliefs.sample_training(seeds.COURSE_CHECK, QUICK_DOCS))
        else:
            quick = heldout_loss(model, docs)
        ev = card["eval"]
        targets = check_targets(name, ev)
        unmet = [m for m, t in targets.items() if not t["met"]]
        # Three standard errors of the small sample on top of a floor: a model that does not
        # copy songs has a gap that moves with the share of songs in the sample.
        agree = abs(quick["gap"] - ev["gap"]) <= GAP_TOLERANCE + 3 * quick["gap_se"]
        status |= not agree
        print(
            f"{name:20s} {card['n_params']:9,d} {load_s:7.2f} {quick['gap']:7.3f} {ev['gap']:7.3f}  "
            f"{len(targets) - len(unmet)}/{len(targets)} met"
            + (f" (not: {', '.join(unmet)})" if unmet else "")
            + ("" if agree else "  GAP DISAGREES WITH CARD")
        )
    print(
        f"gap: loss minus entropy floor on {QUICK_DOCS} fresh held-out documents or traces (seed "
        f"{seeds.COURSE_CHECK}); card: the card's 2000-document measurement.\n"
    )
    return status


def run_notebooks(paths: list[Path]) -> list[dict]:
    """Execute each notebook, keeping the executed copy in build/ for the test suite."""
    return [execute(path, keep=COURSE_RUNS) for path in tqdm(paths, desc="executing notebooks", unit="notebook")]


def sweep(paths: list[Path], k: int) -> int:
    """Run each notebook on its own sample and fresh samples 1..k; print, record; 1 if a claim fails."""
    runs = [(path, sample) for path in paths for sample in [robustness.OWN, *range(1, k + 1)]]
    results: dict[str, list[dict]] = {}
    for path, sample in tqdm(runs, desc="notebooks × samples", unit="run"):
        run = robustness.run_sample(path, sample)
        robustness.keep(path, run)
        results.setdefault(path.name, []).append(run)
    summaries = [robustness.summarise(name, rs) for name, rs in results.items()]
    for summary in summaries:
        print(robustness.report(summary) + "\n")
    robustness.record(summaries, k)
    records.render_readme()
    print(f"recorded in {robustness.ROBUSTNESS_JSON.name} and README.md")
    return int(any(s["fresh_samples_held"] < s["fresh_samples"] or not s["own_sample_holds"] for s in summaries))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.course", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all of solutions/)")
    ap.add_argument(
        "--record",
        action="store_true",
        help="write the measurement to benchmarks/notebooks.json and the README's table (all notebooks only)",
    )
    ap.add_argument("--skip-zoo", action="store_true", help="only execute notebooks")
    ap.add_argument(
        "--reseed",
        type=int,
        metavar="K",
        help="run each notebook on its own sample and K fresh ones, asserts recorded; record the sweep",
    )
    args = ap.parse_args(argv)
    if args.record and args.notebooks:
        ap.error("--record measures every notebook; leave out the notebook names")
    paths = args.notebooks or sorted(SOLUTIONS.glob("*.ipynb"))
    for path in paths:
        try:
            read_notebook(path)
        except NotebookError as e:
            print(f"python -m utils.course: error: {e}", file=sys.stderr)
            return 1
    if args.reseed is not None:
        if args.record:
            ap.error("--reseed records its own sweep; run --record separately")
        return sweep(paths, args.reseed)
    status = 0 if args.skip_zoo else check_zoo()
    rows = run_notebooks(paths)
    print(records.notebook_table(rows))
    if args.record:
        records.record_notebooks(rows)
        print(f"recorded in {records.NOTEBOOKS_JSON.name} and README.md")
    return status | any(r["error"] is not None for r in rows)


if __name__ == "__main__":
    sys.exit(main())
