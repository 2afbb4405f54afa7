"""Do a lesson's claims hold on other samples? ``python -m utils.course --reseed K`` (``make robustness``).

Every claim a lesson makes is an ``assert`` in its solutions notebook, checked on the prompts
the lesson draws from its seeds (``utils.seeds``). A claim about the model must also hold on
prompts the lesson never drew. The sweep runs each notebook on its own sample and on ``K``
fresh ones (``COURSE_FRESH_SAMPLE=k``, which swaps every lesson seed for a fresh held-out one),
with every ``assert`` rewritten to record instead of raise: whether it held, the value of
each side of every comparison in it, and its **margin**: how far the asserted number sat from
its threshold, as a share of the larger side (0.07 against a bound of 0.08 is a margin of
12.5%; a claim that held by a hair has a margin near 0, one that failed a negative margin).
It prints, per lesson, which claims fail on which sample, the spread of every asserted number
across samples and the claims with the thinnest margins, and writes the record
``benchmarks/robustness.json``, which the README's notebook table shows as a column.

A margin is measured for each ordering comparison (``<``, ``<=``, ``>``, ``>=``) that the claim
needs to hold: the assert's own comparison, those joined by ``and``, and those inside ``all(...)``
or ``.all()`` (over every element; the smallest counts). Comparisons under ``or``, ``not`` or in a
function's argument do not decide the claim alone and get none.

The rewrite happens in the kernel (an IPython AST transformer installed by :func:`install`
before the notebook's first cell), so the notebook itself is run unchanged.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import operator
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


_margins: dict[str, dict[int, dict]] = {}
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_OTHER = {
    "==": operator.eq,
    "!=": operator.ne,
    "is": operator.is_,
    "is not": operator.is_not,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}
_OP_NAMES = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


def _numbers(x):
    """A float tensor of an operand's numbers, or None when it holds none (a string, a set, a None)."""
    import numpy as np
    import torch

    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)):
        return torch.tensor(float(x))
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu() if x.numel() and x.dtype != torch.bool else None
    if isinstance(x, (np.ndarray, np.generic)) and np.issubdtype(np.asarray(x).dtype, np.number):
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    return None


def margin(left, op: str, right) -> tuple[float, float, object, object] | None:
    """How far ``left op right`` is from flipping: ``(relative, slack, left, right)`` at the element
    nearest to flipping, or None when the sides are not numbers. The slack is positive when the
    comparison holds (``right - left`` for ``<``); relative divides it by the larger side's size."""
    import torch

    a, b = _numbers(left), _numbers(right)
    if a is None or b is None:
        return None
    try:
        a, b = torch.broadcast_tensors(a, b)
    except RuntimeError:  # shapes that do not broadcast: the comparison itself will say so
        return None
    slack = (b - a) if op in ("<", "<=") else (a - b)
    scale = a.abs().maximum(b.abs())
    relative = (slack / scale).nan_to_num(0.0)  # 0 against 0: the comparison sits on its edge
    i = int(relative.flatten().argmin())
    return (float(relative.flatten()[i]), float(slack.flatten()[i]), float(a.flatten()[i]), float(b.flatten()[i]))


def _compare(key: str, at: int, ops: tuple[str, ...], *operands):
    """An ordering comparison that decides a claim: evaluated as Python would (lazily, left to
    right, a chain stopping at its first false link), each ordering link's margin noted; the
    smallest margin seen for this comparison (in a loop: over every element) is kept."""
    left = operands[0]()
    result = True
    for op, thunk in zip(ops, operands[1:]):
        right = thunk()
        result = (_ORDER.get(op) or _OTHER[op])(left, right)
        if op in _ORDER:
            m = margin(left, op, right)
            if m is not None:
                best = _margins.setdefault(key, {}).get(at)
                if best is None or m[0] < best["margin"]:
                    _margins[key][at] = {"margin": m[0], "slack": m[1], "sides": [m[2], m[3]], "op": op}
        if len(ops) > 1 and not result:
            return result
        left = right
    return result


def _claim(key: str, text: str, truth, message) -> None:
    """Record an assert's outcome instead of raising."""
    held = bool(truth)
    record = {"key": key, "assert": text, "held": held, "values": _pending.pop(key, {})}
    measured = _margins.pop(key, {})
    if measured:
        record["margins"] = [dict(at=at, **m) for at, m in sorted(measured.items())]
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


class _Deciding(ast.NodeTransformer):
    """Turn each ordering comparison that decides the claim (see the module's docstring) into
    ``_course_compare(key, at, ops, lambda: a, lambda: b, ...)``, which notes its margin."""

    def __init__(self, key: str):
        self.key, self.at = key, 0

    def deciding(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            node.values = [self.deciding(v) for v in node.values]
            return node
        if isinstance(node, ast.Call) and not node.keywords and len(node.args) <= 1:
            f = node.func
            is_all = (isinstance(f, ast.Name) and f.id == "all") or (
                isinstance(f, ast.Attribute) and f.attr == "all" and isinstance(f.value, ast.Name)
            )
            if is_all and len(node.args) == 1:  # all(...), torch.all(...), np.all(...)
                arg = node.args[0]
                if isinstance(arg, (ast.GeneratorExp, ast.ListComp)):
                    arg.elt = self.deciding(arg.elt)
                else:
                    node.args[0] = self.deciding(arg)
                return node
            if isinstance(f, ast.Attribute) and f.attr == "all" and not node.args:  # (x < y).all()
                f.value = self.deciding(f.value)
                return node
        if isinstance(node, ast.Compare) and any(type(op) in _ORDER_NODES for op in node.ops):
            at, self.at = self.at, self.at + 1
            thunks = [
                ast.Lambda(ast.arguments([], [], None, [], [], None, []), operand)
                for operand in [node.left, *node.comparators]
            ]
            call = ast.Call(
                func=ast.Name("_course_compare", ast.Load()),
                args=[
                    ast.Constant(self.key),
                    ast.Constant(at),
                    ast.Tuple([ast.Constant(_OP_NAMES[type(op)]) for op in node.ops], ast.Load()),
                    *thunks,
                ],
                keywords=[],
            )
            return ast.copy_location(call, node)
        return node


_ORDER_NODES = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def cell_digest(source: str) -> str:
    """What names a cell in the claims file: a digest of its source."""
    return hashlib.sha256(source.strip().encode()).hexdigest()[:12]


def code_digest(path: Path) -> str:
    """A digest of a notebook's code (every code cell's source, in order): the version of a lesson a sweep ran.
    Prose can change without a new sweep; any change to the code needs one."""
    cells = json.loads(Path(path).read_text())["cells"]
    code = "\n\0\n".join("".join(c["source"]).strip() for c in cells if c["cell_type"] == "code")
    return hashlib.sha256(code.encode()).hexdigest()[:16]


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
        test = _Deciding(key).deciding(_Operands(key).visit(node.test))
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
    """In a kernel: from the next cell on, every assert records its outcome in the claims file, which
    each kernel starts afresh (a run repeated after a stall must not follow the stopped run's claims)."""
    if CLAIMS_ENV in os.environ:
        Path(os.environ[CLAIMS_ENV]).write_text("", encoding="utf-8")
    shell = get_ipython()  # noqa: F821 (IPython's own global)
    shell.user_ns.update(_course_value=_value, _course_claim=_claim, _course_compare=_compare)
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
                **({"margin": claim_margin(c)} if claim_margin(c) is not None else {}),
                **({"message": c["message"]} if "message" in c else {}),
            }
    table = [rows[k] for k in sorted(rows)]
    for row in table:
        margins = [o["margin"] for o in row["samples"].values() if "margin" in o]
        if margins:
            row["margin"] = min(margins)
    return table


def claim_margin(claim: dict) -> float | None:
    """A claim's margin on one sample: the smallest of its deciding comparisons' (None: it has none)."""
    margins = [m["margin"] for m in claim.get("margins", [])]
    return round(min(margins), 4) if margins else None


def fixed(row: dict) -> bool:
    """Whether a claim compared the same values (and had the same margin: the values inside ``all(...)``
    are not kept) on every sample, more than one: it is about a fixed prompt or the weights, so its
    margin, however thin, does not move with the sample."""
    seen = [json.dumps([o["values"], o.get("margin")]) for o in row["samples"].values()]
    first = next(iter(row["samples"].values()))
    return len(seen) > 1 and len(set(seen)) == 1 and bool(first["values"] or "margin" in first)


def thinnest(table: list[dict], n: int = 8) -> list[dict]:
    """The n claims with the smallest margin over every sample (the ones nearest to failing), leaving
    out those whose values are the same on every sample."""
    return sorted((r for r in table if "margin" in r and not fixed(r)), key=lambda r: r["margin"])[:n]


def summarise(name: str, runs: list[dict], digest: str | None = None) -> dict:
    """The record of one lesson: per sample its error and failed claims, and every claim's row; ``digest``: the
    ``code_digest`` of the notebook the runs ran."""
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
        "code_digest": digest,
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
            lines.append(
                f"  {'':>22}  values across samples: "
                + " | ".join(sides)
                + (f"  (margin at least {row['margin']:.1%})" if "margin" in row else "")
            )
        for k in failed:
            o = outcomes[k]
            lines.append(
                f"  {'':>22}    {'own' if k == str(OWN) else 'sample ' + k}: "
                + " | ".join(json.dumps(v) for v in o["values"])
                + (f"  ({o.get('message')})" if o.get("message") else "")
            )
    if thin := thinnest(summary["claims"]):
        lines.append(
            "  thinnest margins (the smallest over every sample; under 10% is close to failing; claims that compare "
            "the same values on every sample left out):"
        )
        for row in thin:
            lines.append(f"  {row['margin']:>21.1%}  cell {row['cell']} line {row['line']}: {row['assert'][:90]}")
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
