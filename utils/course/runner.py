"""The course's main job on the embedded default: ``python -m utils.course`` (``make course``).

1. Checks the model zoo: every built model loads offline, its weights match the card's
   sha256, and a forward pass on fresh held-out documents agrees with the card.
2. Executes every ``solutions/`` notebook headless, as many side by side as the cores allow (two
   on two cores, one thread each), and prints a table of wall time and the kernel's peak memory per
   notebook; ``--record`` runs them one at a time, so that each time is the lesson's own.

It exits non-zero if a model or a notebook fails, and it leaves every tracked file as it was:
each executed notebook is kept in ``build/course-runs/`` (ignored by git), stamped with what it
was run from, and the test suite checks those runs instead of executing the lessons again while
nothing they depend on has changed. ``--record`` (``make record``) also writes the measurement to
``benchmarks/notebooks.json`` and renders the README's notebook table from it.

The lessons run offline: their kernels start without ``NDIF_API_KEY`` (nor NDIF's host, nor nnsight's
own config file, where a saved key lives), so the appendix's NDIF cell sends nothing anywhere. A
checkout where ``build/`` cannot be written runs the lessons without keeping them; Ctrl-C stops the
run in one line (exit 130).

``--reseed K`` (``make robustness``) instead runs each notebook on its own sample and on K fresh
ones, asserts recorded rather than raised (``utils.course.robustness``), prints which claims fail on
which sample with the spread of every asserted value, records the sweep in
``benchmarks/robustness.json`` and renders the README's column from it. It exits non-zero
when a claim fails on any sample.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from utils import seeds
from utils.cards.model_cards import check_targets
from utils.corpora import beliefs, countdown, storyworld
from utils.course import records, robustness, validate
from utils.course.notebooks import NNSIGHT_CONFIG, REMOTE_ENV, NotebookError, read_notebook
from utils.metrics.beliefs import story_loss
from utils.metrics.countdown import trace_loss
from utils.metrics.loss import heldout_loss
from utils.model_zoo.models import ZOO, corpus_of, load_model, read_card, zoo
from utils.paths import BENCHMARKS, COURSE_RUNS, SOLUTIONS, shown

PROG = "python -m utils.course"
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports after Ctrl-C
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


def check_pretrained() -> int:
    """Make SmolLM2-135M ready before the lessons need it (converted once from the wheel that setup fetched,
    about 20 s) and load it offline; 1 if that fails, with the fix in one sentence."""
    from utils.model_zoo import pretrained

    t = time.time()
    try:
        pretrained.ensure()
        model = load_model(pretrained.NAME, device="cpu")
    except pretrained.PretrainedError as e:
        print(f"{pretrained.NAME:20s} NOT READY: {e}\n")
        return 1
    print(
        f"Pretrained elsewhere: {pretrained.NAME} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}, "
        f"ready and loaded in {time.time() - t:.1f} s from {shown(pretrained.converted_folder())})\n"
    )
    return 0


class DiskFull(Exception):
    """A lesson ran, but its run could not be kept: the message says which and what to do."""


SIDE_BY_SIDE_MAX = 4  # lessons at once: each kernel peaks near 2 GB


def side_by_side(paths: list[Path], cores: int | None = None) -> tuple[int, int]:
    """How many lessons ``make course`` runs at once and how many threads each kernel gets: one lesson
    per core up to four, the cores shared out between them (two at most each: more starve the kernels
    beside them). A small model's kernel uses a second thread poorly, so on two cores two lessons with one
    thread each finish sooner than one with two."""
    cores = cores or os.cpu_count() or 1
    workers = max(1, min(len(paths), cores, SIDE_BY_SIDE_MAX))
    return workers, max(1, min(2, cores // workers))


def longest_first(paths: list[Path]) -> list[Path]:
    """``paths`` with the lessons the last recorded measurement found slowest first, so that the lesson
    left running alone at the end is a short one; lessons never measured go first."""
    try:
        recorded = {r["notebook"]: r["seconds"] or 0 for r in records.recorded_notebooks()}
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    return sorted(paths, key=lambda p: -recorded.get(Path(p).name, float("inf")))


def run_notebooks(paths: list[Path], keep: Path | None = COURSE_RUNS, one_at_a_time: bool = False) -> list[dict]:
    """Validate each notebook with nbval (:func:`utils.course.validate.run`), keeping the executed
    copy in ``keep`` (build/) for the test suite; one record per notebook, in the order of ``paths``.
    Lessons run side by side (:func:`side_by_side`) unless ``one_at_a_time``, as ``--record`` asks so that
    each lesson's time is its own."""
    workers, threads = (1, None) if one_at_a_time else side_by_side(paths)
    if workers > 1:
        print(
            f"running {len(paths)} lessons {workers} at a time, {threads} thread(s) each "
            "(each time in the table below is under that load; `make record` runs them one at a time)"
        )
        options = ("-n", str(workers), "--dist", "loadfile")
        rows = validate.run(longest_first(paths), keep, options=options, threads=threads)
        by_name = {r["notebook"]: r for r in rows}
        rows = [by_name[Path(p).name] for p in paths]
    else:
        rows = validate.run(paths, keep)
    for row in rows:
        if "not_kept" in row:
            raise DiskFull(f"{row['notebook']} ran, but its run could not be kept in {shown(keep)}: {row['not_kept']}")
    return rows


def unwritable(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (made if missing), or None when they can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"x")
    except OSError as e:
        return e.strerror or str(e)
    return None


@contextmanager
def offline_kernels() -> Iterator[str | None]:
    """While in it, the lessons' kernels (which start with this process's environment) get no NDIF key
    or host and no nnsight config file; yields the line that says so when there was something to leave
    out. The environment is put back after."""
    saved = {k: os.environ[k] for k in (*REMOTE_ENV, NNSIGHT_CONFIG) if k in os.environ}
    user_config = os.environ.get(NNSIGHT_CONFIG) or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "nnsight", "config.yaml"
    )
    left_out = [k for k in REMOTE_ENV if os.environ.get(k)]
    if os.path.isfile(user_config) and user_config != os.devnull:
        left_out.append(f"nnsight's config file {user_config}")
    for k in REMOTE_ENV:
        os.environ.pop(k, None)
    os.environ[NNSIGHT_CONFIG] = os.devnull
    try:
        yield (
            f"The lessons run offline: their kernels start without {' and '.join(left_out)}, so nothing is sent to NDIF"
            if left_out
            else None
        )
    finally:
        for k in (*REMOTE_ENV, NNSIGHT_CONFIG):
            os.environ.pop(k, None)
        os.environ.update(saved)


def sweep(paths: list[Path], k: int) -> int:
    """Run each notebook on its own sample and fresh samples 1..k; print, record; 1 if a claim fails."""
    runs = [(path, sample) for path in paths for sample in [robustness.OWN, *range(1, k + 1)]]
    digests = {path.name: robustness.code_digest(path) for path in paths}  # the code as it is when the sweep starts
    results: dict[str, list[dict]] = {}
    for path, sample in tqdm(runs, desc="notebooks × samples", unit="run"):
        run = robustness.run_sample(path, sample)
        robustness.keep(path, run)
        results.setdefault(path.name, []).append(run)
    summaries = [robustness.summarise(name, rs, digests[name]) for name, rs in results.items()]
    changed = [path.name for path in paths if robustness.code_digest(path) != digests[path.name]]
    for name in changed:  # edited while it ran: the record would name code no run ran
        print(f"{name}'s code changed during the sweep: the record names the code it started with; sweep it again")
    for summary in summaries:
        print(robustness.report(summary) + "\n")
    robustness.record(summaries, k)
    records.render_readme()
    print(f"recorded in {robustness.ROBUSTNESS_JSON.name} and README.md")
    return int(any(s["fresh_samples_held"] < s["fresh_samples"] or not s["own_sample_holds"] for s in summaries))


def _sample_count(s: str) -> int:
    n = seeds.samples_available()
    try:
        k = int(s)
    except ValueError:
        k = 0
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"there are {n} fresh samples: give a number from 1 to {n}, not {s!r}")
    return k


def main(argv=None) -> int:
    """The command line; Ctrl-C stops it with one line and exit 130, its kernel shut down."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted (Ctrl-C): the lesson it was running and its kernel are stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DiskFull as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all of solutions/)")
    ap.add_argument(
        "--record",
        action="store_true",
        help="write the measurement to benchmarks/notebooks.json and the README's table (all notebooks only)",
    )
    ap.add_argument("--skip-zoo", action="store_true", help="only execute notebooks")
    ap.add_argument(
        "--reseed",
        type=_sample_count,
        metavar="K",
        help="run each notebook on its own sample and K fresh ones, asserts recorded; record the sweep",
    )
    args = ap.parse_args(argv)
    if args.record and args.notebooks:
        ap.error("--record measures every notebook; leave out the notebook names")
    if args.reseed is not None and args.record:
        ap.error("--reseed records its own sweep; run --record separately")
    paths = args.notebooks or sorted(SOLUTIONS.glob("*.ipynb"))
    for path in paths:
        try:
            read_notebook(path)
        except NotebookError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
    records_to = [BENCHMARKS] if args.record else [BENCHMARKS, robustness.RUNS] if args.reseed is not None else []
    for folder in records_to:
        if (why := unwritable(folder)) is not None:
            print(
                f"{PROG}: error: {shown(folder)} cannot be written ({why}), so nothing could be recorded",
                file=sys.stderr,
            )
            return 1
    keep: Path | None = COURSE_RUNS
    if args.reseed is None and (why := unwritable(COURSE_RUNS)) is not None:
        print(
            f"{shown(COURSE_RUNS)} cannot be written ({why}): running the lessons without keeping their runs "
            "(the test suite will run them again)"
        )
        keep = None
    with offline_kernels() as note:
        if note:
            print(note)
        if args.reseed is not None:
            return sweep(paths, args.reseed)
        status = 0 if args.skip_zoo else check_zoo() | check_pretrained()
        rows = run_notebooks(paths, keep, one_at_a_time=args.record)
    print(records.notebook_table(rows))
    if args.record:
        records.record_notebooks(rows)
        print(f"recorded in {records.NOTEBOOKS_JSON.name} and README.md")
    failed = status | any(r["error"] is not None for r in rows)
    if not failed:
        print(NEXT_STEP)
    return failed


NEXT_STEP = (
    "Next: `make lab` opens JupyterLab on the start page (notebooks/README.md); begin with lesson 00. "
    "Your answers go in notebooks/, the worked solutions are in solutions/."
)


if __name__ == "__main__":
    sys.exit(main())
