"""Do a lesson's claims hold on other samples? ``python -m utils.course --reseed K`` (``make robustness``).

Every claim a lesson makes is an ``assert`` in its solutions notebook, checked on the prompts
the lesson draws from its seeds (``utils.seeds``). A claim about the model must also hold on
prompts the lesson never drew. The sweep runs each notebook on its own sample and on ``K``
fresh ones (``COURSE_FRESH_SAMPLE=k``, which swaps every lesson seed for a fresh held-out one),
with every ``assert`` rewritten to record instead of raise: whether it held, and the value of
each side of every comparison in it. It prints, per lesson, which claims fail on which sample
and the spread of every asserted number across samples, and writes the record
``benchmarks/robustness.json``, which the README's notebook table shows as a column.

The rewrite happens in the kernel (an IPython AST transformer installed by :func:`install`
before the notebook's first cell), so the notebook itself is run unchanged.
"""

from __future__ import annotations

import ast
import json
import math
import os
import tempfile
from pathlib import Path

from utils import seeds
from utils.paths import BENCHMARKS, ROOT

ROBUSTNESS_JSON = BENCHMARKS / "robustness.json"
RUNS = ROOT / "runs" / "robustness"  # each run's raw record, kept so that a report can be made again
CLAIMS_ENV = "COURSE_CLAIMS_FILE"  # where the kernel appends one JSON line per evaluated assert
OWN = 0  # the sample number of the lesson's own seeds

# Run before a notebook's first cell, in its kernel.
PRELUDE = "from utils.course.robustness import install as _course_install\n_course_install()"


# --- in the kernel ---------------------------------------------------------------------------

_pending: dict[str, dict[int, object]] = {}


def plain(x) -> object:
    """A JSON-friendly summary of an asserted value: numbers as numbers, small tensors as lists,
    large ones as their range."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else repr(x)
    if hasattr(x, "detach") and hasattr(x, "numel"):  # a torch tensor
        x = x.detach().float().cpu()
        if x.numel() == 1:
            return plain(x.item())
        if x.numel() <= 16:
            return [plain(v) for v in x.flatten().tolist()]
        return {"n": x.numel(), "min": plain(x.min().item()), "max": plain(x.max().item())}
    if hasattr(x, "item") and getattr(x, "size", 2) == 1:  # a numpy scalar
        return plain(x.item())
    if isinstance(x, (list, tuple, set, frozenset)):
        items = sorted(x, key=repr) if isinstance(x, (set, frozenset)) else list(x)
        return [plain(v) for v in items] if len(items) <= 16 else f"<{len(items)} items>"
    return repr(x)[:80]


def _value(key: str, slot: int, x):
    """One side of a comparison inside an assert: record it, hand it back unchanged."""
    _pending.setdefault(key, {})[slot] = plain(x)
    return x


def _claim(key: str, text: str, truth, message) -> None:
    """Record an assert's outcome instead of raising."""
    held = bool(truth)
    record = {"key": key, "assert": text, "held": held, "values": _pending.pop(key, {})}
    if not held:
        try:
            record["message"] = str(message()) if message is not None else ""
        except Exception as error:  # a message that cannot be built is still a failed claim
            record["message"] = f"(the message failed: {error!r})"
    with open(os.environ[CLAIMS_ENV], "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class _Operands(ast.NodeTransformer):
    """Wrap each side of every comparison in ``_course_value(key, slot, ...)``, outside lambdas
    and comprehensions (whose values change from one element to the next)."""

    def __init__(self, key: str):
        self.key, self.slot = key, 0

    def _wrap(self, node: ast.expr) -> ast.expr:
        call = ast.Call(
            func=ast.Name("_course_value", ast.Load()),
            args=[ast.Constant(self.key), ast.Constant(self.slot), node],
            keywords=[],
        )
        self.slot += 1
        return ast.copy_location(call, node)

    def visit_Compare(self, node: ast.Compare) -> ast.Compare:
        self.generic_visit(node)
        node.left = self._wrap(node.left)
        node.comparators = [self._wrap(c) for c in node.comparators]
        return node

    def _leave(self, node):
        return node

    visit_Lambda = visit_GeneratorExp = visit_ListComp = visit_SetComp = visit_DictComp = _leave


def cell_digest(source: str) -> str:
    """What names a cell in the claims file: a digest of its source."""
    import hashlib

    return hashlib.sha256(source.strip().encode()).hexdigest()[:12]


class SoftAsserts(ast.NodeTransformer):
    """Rewrite ``assert test, message`` into a call that records the outcome and the compared
    values; keyed by the cell (a digest of its source) and the line."""

    cell = "?"

    def remember(self, lines: list[str]) -> list[str]:
        """An IPython input transformer that changes nothing: it notes which cell is being run."""
        self.cell = cell_digest("".join(lines))
        return lines

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        key = f"{self.cell}:{node.lineno}"
        text = ast.unparse(node.test)
        test = _Operands(key).visit(node.test)
        message = (
            ast.Lambda(ast.arguments([], [], None, [], [], None, []), node.msg) if node.msg else ast.Constant(None)
        )
        call = ast.Call(
            func=ast.Name("_course_claim", ast.Load()),
            args=[ast.Constant(key), ast.Constant(text), test, message],
            keywords=[],
        )
        return ast.fix_missing_locations(ast.copy_location(ast.Expr(call), node))


def install() -> None:
    """In a kernel: from the next cell on, every assert records its outcome in the claims file."""
    shell = get_ipython()  # noqa: F821 (IPython's own global)
    shell.user_ns.update(_course_value=_value, _course_claim=_claim)
    rewrite = SoftAsserts()
    shell.input_transformers_post.append(rewrite.remember)
    shell.ast_transformers.append(rewrite)


# --- in the runner ---------------------------------------------------------------------------


def run_sample(path: Path, sample: int) -> dict:
    """Execute one notebook on one sample with asserts recorded, not raised.

    Returns ``{"sample", "seeds", "error", "seconds", "claims": [{"cell", "line", "assert",
    "held", "values", "message"?}, ...]}``; an assert run more than once (in a loop) gives one
    entry per run, in order.
    """
    from utils.course.notebooks import execute

    with tempfile.TemporaryDirectory() as tmp:
        claims_file = Path(tmp) / "claims.jsonl"
        claims_file.touch()
        env = {CLAIMS_ENV: str(claims_file), seeds.FRESH_SAMPLE_ENV: str(sample) if sample != OWN else ""}
        result = execute(path, env=env, prelude=PRELUDE)
        lines = [json.loads(line) for line in claims_file.read_text().splitlines() if line.strip()]
    from utils.course.notebooks import read_notebook

    nb = read_notebook(path)
    cells = {cell_digest(c.source): i for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    claims = []
    for record in lines:
        digest, line = record.pop("key").split(":")
        claims.append({"cell": cells.get(digest, -1), "line": int(line), **record})  # -1: a cell it cannot name
    return {
        "sample": sample,
        "seeds": seeds.fresh_sample_seeds(sample) if sample != OWN else {},
        "error": result["error"],
        "seconds": result["seconds"],
        "claims": claims,
    }


def keep(path: Path, run: dict) -> None:
    """Keep one run's raw record under ``runs/robustness/`` (untracked), so that a report can be
    made again without running the notebook."""
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{Path(path).stem}.{run['sample']}.json").write_text(json.dumps(run) + "\n")


def claim_table(runs: list[dict]) -> list[dict]:
    """One row per asserted claim (and per evaluation of a claim run in a loop): where it is,
    what it says, whether it held on each sample and the values compared on each."""
    rows: dict[tuple, dict] = {}
    for run in runs:
        seen: dict[tuple, int] = {}
        for c in run["claims"]:
            where = (c["cell"], c["line"])
            nth = seen[where] = seen.get(where, -1) + 1
            row = rows.setdefault(
                (*where, nth), {"cell": c["cell"], "line": c["line"], "nth": nth, "assert": c["assert"], "samples": {}}
            )
            row["samples"][str(run["sample"])] = {
                "held": c["held"],
                "values": [c["values"][k] for k in sorted(c["values"], key=int)],
                **({"message": c["message"]} if "message" in c else {}),
            }
    return [rows[k] for k in sorted(rows)]


def summarise(name: str, runs: list[dict]) -> dict:
    """The record of one lesson: per sample its error and failed claims, and every claim's row."""
    table = claim_table(runs)
    samples = {}
    for run in runs:
        k = str(run["sample"])
        failed = [r for r in table if k in r["samples"] and not r["samples"][k]["held"]]
        missing = [r for r in table if k not in r["samples"]]  # never reached: the run stopped before it
        samples[k] = {
            "seeds": run["seeds"],
            "error": run["error"],
            "seconds": run["seconds"],
            "failed": len(failed),
            "not_reached": len(missing),
            "holds": run["error"] is None and not failed and not missing,
        }
    fresh = [s for k, s in samples.items() if k != str(OWN)]
    return {
        "notebook": name,
        "fresh_samples": len(fresh),
        "fresh_samples_held": sum(s["holds"] for s in fresh),
        "own_sample_holds": samples.get(str(OWN), {}).get("holds"),
        "samples": samples,
        "claims": table,
    }


def _spread(values: list) -> str:
    """min–max of a list of numbers, or the distinct values."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values) and numbers:
        lo, hi = min(numbers), max(numbers)
        return f"{lo:.4g}" if lo == hi else f"{lo:.4g} to {hi:.4g}"
    distinct = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    return " / ".join(json.dumps(v) for v in distinct)[:80]


def report(summary: dict) -> str:
    """What a maintainer reads: which claims fail on which sample, and the spread of every asserted value."""
    lines = [
        f"{summary['notebook']}: {len(summary['claims'])} asserted claims; "
        f"all hold on {summary['fresh_samples_held']}/{summary['fresh_samples']} fresh samples"
        + ("" if summary["own_sample_holds"] in (None, True) else " (and FAIL on the lesson's own sample)")
    ]
    for k, s in summary["samples"].items():
        label = "own sample" if k == str(OWN) else f"sample {k}"
        if s["error"]:
            lines.append(f"  {label}: stopped with an error: {s['error']}")
        if s["not_reached"] and not s["error"]:
            lines.append(f"  {label}: {s['not_reached']} claims never reached")
    for row in summary["claims"]:
        outcomes = row["samples"]
        failed = [k for k, o in outcomes.items() if not o["held"]]
        n_sides = max((len(o["values"]) for o in outcomes.values()), default=0)
        sides = [_spread([o["values"][i] for o in outcomes.values() if i < len(o["values"])]) for i in range(n_sides)]
        where = f"cell {row['cell']} line {row['line']}" + (f" (run {row['nth'] + 1})" if row["nth"] else "")
        mark = "FAILS on " + ", ".join("own" if k == str(OWN) else k for k in failed) if failed else "holds"
        lines.append(f"  {mark:>22}  {where}: {row['assert'][:90]}")
        if sides:
            lines.append(f"  {'':>22}  values across samples: " + " | ".join(sides))
        for k in failed:
            o = outcomes[k]
            lines.append(
                f"  {'':>22}    {'own' if k == str(OWN) else 'sample ' + k}: "
                + " | ".join(json.dumps(v) for v in o["values"])
                + (f"  ({o.get('message')})" if o.get("message") else "")
            )
    return "\n".join(lines)


def recorded() -> dict:
    """The recorded sweep, by notebook name (empty when none was recorded)."""
    try:
        return json.loads(ROBUSTNESS_JSON.read_text())["lessons"]
    except FileNotFoundError:
        return {}


def record(summaries: list[dict], k: int) -> None:
    """Merge these lessons' results into ``benchmarks/robustness.json`` (other lessons' stay)."""
    lessons = recorded()
    lessons.update({s["notebook"]: s for s in summaries})
    BENCHMARKS.mkdir(exist_ok=True)
    data = {
        "what": (
            "each solutions notebook run on its own seeds (sample 0) and on fresh samples 1..K, "
            "asserts recorded instead of raised (python -m utils.course --reseed K)"
        ),
        "fresh_sample_seeds": {str(j): seeds.fresh_sample_seeds(j) for j in range(1, k + 1)},
        "lessons": dict(sorted(lessons.items())),
    }
    ROBUSTNESS_JSON.write_text(json.dumps(data, indent=1) + "\n")


def column(name: str, lessons: dict | None = None) -> str:
    """The README's cell for one notebook: on how many fresh samples all its claims hold."""
    lessons = recorded() if lessons is None else lessons
    s = lessons.get(name)
    if s is None:
        return "not run"
    return f"{s['fresh_samples_held']}/{s['fresh_samples']}"
