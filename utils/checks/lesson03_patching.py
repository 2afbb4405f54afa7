"""Checks for lesson 03, activation and path patching: ``check_<exercise>(your_function)``.

The sweep checks run the model on three fresh clean and corrupted prompts of the shortest
template. Each compares once with TransformerLens's own one-site-per-pass sweep
(``patching.get_act_patch_resid_pre``, ``get_act_patch_attn_head_out_all_pos``) and, for the
other hooks, with a batched sweep of the check's own (one forward pass per layer), which the
tests compare with TransformerLens's. Path patching is compared with a slow reference that
patches one sender at a time. When an answer is wrong, the check computes the common wrong
answers the same way and names the mistake whose result the learner's matches.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable

import torch

from utils.checks.framework import CheckFailed, as_number, call, expect_close, expect_tensor, passed
from utils.corpora.ioi_pairs import exchange_names, patching_pairs
from utils.seeds import LESSON_03_CHECKS


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


# --- corrupted prompts and the metric -------------------------------------------------

_EXCHANGE_CASES = [
    ("When Ann and Bob went to the park, Bob gave the kite to", "Ann", "Bob"),
    ("As Leo and Gail walked to the garden after lunch, Leo threw the coat to", "Gail", "Leo"),
    ("While Al and Alma were at the beach, Alma passed the cup to", "Al", "Alma"),
    ("Then Bob, who had the kite, gave it to Ann. Ann thanked Bob.", "Ann", "Bob"),
    ("While Al and Alma were at the beach, Al passed the cup to", "Alma", "Al"),
    ("Ann gave Bob the kite.", "Ann", "Bob"),
    ("Bob and Al saw Alma at the park, and Al waved to", "Bob", "Al"),
    ("Ann gave the kite to Bob", "Ann", "Bob"),  # a name at the very end
    ("Bob's kite flew to Ann! Ann (not Bob) kept it", "Ann", "Bob"),  # a name before ', !, ( and )
]


def _word(name: str) -> str:
    return rf"\b{re.escape(name)}\b"


def _by_spaces(text: str, a: str, b: str, split: Callable[[str], list[str]]) -> str:
    return " ".join(b if w == a else a if w == b else w for w in split(text))


def _first_only(text: str, a: str, b: str) -> str:
    return re.sub(rf"{_word(a)}|{_word(b)}", lambda m: b if m.group(0) == a else a, text, count=1)


def _first_of_each(text: str, a: str, b: str) -> str:
    text = re.sub(_word(a), "\0", text, count=1)
    return re.sub(_word(b), a, text, count=1).replace("\0", b)


# Wrong ways to exchange two names, each with what it gets wrong. A learner's function is
# matched with one of them only if it gives the same text on every case.
_ONE_NAME = (
    "turns both names into the same name. Every {a} must become {b} and every {b} must become {a} at "
    "the same time: replacing one name (or one name and then the other) cannot do that, because the "
    "second replacement also changes the names the first one wrote. Exchange them in one pass "
    "(`re.sub` with a function that returns the other name) or through a placeholder."
)
_SPACES = (
    "leaves a name unchanged when punctuation follows it ({a!r} and {b!r} in {text!r}): splitting on "
    'spaces keeps the punctuation in the word, so "{a}." is not the word "{a}". Match whole words with a regular '
    'expression (`\\b` marks the edge of a word) or split with `re.split(r"(\\W+)", text)`, which keeps '
    "the separators."
)
_FIRST = (
    "exchanges only the first occurrence: every mention of both names must change. (`re.sub` replaces "
    "every match unless you pass `count`; `str.replace(old, new, 1)` replaces only the first.)"
)
_INSIDE = (
    "changes a name inside a longer word: {short!r} is also the start of {long!r} in {text!r}. Replace whole words "
    "only, e.g. with `\\b` around each name in a regular expression."
)
_START = (
    "leaves a name unchanged when no space comes before it ({a!r} at the start of {text!r}): a name can begin "
    "the text or follow punctuation. Mark the edge of the word with `\\b`, not with a space or `(?<=\\s)`."
)
_AFTER = (
    "changes a longer word that begins with {b!r} ({text!r}): replacing {space_b!r} matches the start of any "
    "word that begins with the name. Match whole words only, with `\\b` on both sides of each name."
)
_EXCHANGE_MISTAKES: list[tuple[Callable[[str, str, str], str], str]] = [
    (lambda t, a, b: t.replace(a, b).replace(b, a), _ONE_NAME),
    (lambda t, a, b: t.replace(b, a).replace(a, b), _ONE_NAME),
    (lambda t, a, b: re.sub(_word(b), a, re.sub(_word(a), b, t)), _ONE_NAME),
    (lambda t, a, b: re.sub(_word(a), b, re.sub(_word(b), a, t)), _ONE_NAME),
    (lambda t, a, b: t.replace(a, b), _ONE_NAME),
    (lambda t, a, b: t.replace(b, a), _ONE_NAME),
    (lambda t, a, b: re.sub(_word(a), b, t), _ONE_NAME),
    (lambda t, a, b: re.sub(_word(b), a, t), _ONE_NAME),
    (lambda t, a, b: _by_spaces(t, a, b, lambda s: s.split(" ")), _SPACES),
    (lambda t, a, b: _by_spaces(t, a, b, str.split), _SPACES),
    (_first_only, _FIRST),
    (_first_of_each, _FIRST),
    (lambda t, a, b: t.replace(a, "\0").replace(b, a).replace("\0", b), _INSIDE),
    (lambda t, a, b: t.replace(b, "\0").replace(a, b).replace("\0", a), _INSIDE),
    (lambda t, a, b: re.sub(f"{re.escape(a)}|{re.escape(b)}", lambda m: b if m.group(0) == a else a, t), _INSIDE),
    (lambda t, a, b: re.sub(rf"(?<=\s)({_word(a)}|{_word(b)})", lambda m: b if m.group(0) == a else a, t), _START),
    (lambda t, a, b: re.sub(_word(a), "\0", t).replace(f" {b}", f" {a}").replace("\0", b), _AFTER),
]


def check_exchange_names(fn: Callable) -> None:
    """fn(text, a, b) -> the text with every whole-word a and b exchanged."""
    name = _name(fn, "exchange_names")
    outs = []
    for text, a, b in _EXCHANGE_CASES:
        out = call(fn, text, a, b, name=name)
        if not isinstance(out, str):
            raise CheckFailed(f"`{name}` should return the new text, a str, not {type(out).__name__}.")
        outs.append(out)
    wrong = [(case, out) for case, out in zip(_EXCHANGE_CASES, outs) if out != exchange_names(*case)]
    if not wrong:
        passed(name)
        return
    for mistake, message in _EXCHANGE_MISTAKES:
        if all(mistake(*case) == out for case, out in zip(_EXCHANGE_CASES, outs)):
            # name the case that shows the mistake: the first one this mistake gets wrong
            text, a, b = next(case for case in _EXCHANGE_CASES if mistake(*case) != exchange_names(*case))
            short, long = sorted((a, b), key=len)
            fields = dict(text=text, a=a, b=b, short=short, long=long, space_b=f" {b}")
            raise CheckFailed(f"`{name}` " + message.format(**fields))
    (text, a, b), out = wrong[0]
    want = exchange_names(text, a, b)
    short, long = sorted((a, b), key=len)
    hint = f" Replace whole words only: {short!r} is part of {long!r}." if short in long else ""
    raise CheckFailed(f"`{name}({text!r}, {a!r}, {b!r})` gives {out!r}; expected {want!r}.{hint}")


def check_normalised_logit_diff(fn: Callable) -> None:
    """fn(logit_diff [...], clean: float, corrupted: float) -> [...]: 0 at corrupted, 1 at clean."""
    name = _name(fn, "normalised_logit_diff")
    g = torch.Generator().manual_seed(31)
    # the swap corruption makes the corrupted logit difference negative; the "abc" corruption,
    # which leaves part of the answer in place, makes it positive but smaller than the clean one
    for clean, corrupted in ((3.5, -2.0), (9.0, 2.0)):
        ld = corrupted + (clean - corrupted) * (0.5 + torch.randn(6, generator=g))
        out = expect_tensor(call(fn, ld, clean, corrupted, name=name), (6,), ["patch"], name)
        ref = (ld - corrupted) / (clean - corrupted)
        hints = [
            (ld, "that is the logit difference itself: rescale it so the corrupted run gives 0 and the clean run 1."),
            (ld - corrupted, "divide by (clean − corrupted), so that the clean run gives 1."),
            (ld / clean, "subtract the corrupted logit difference first, so that the corrupted run gives 0."),
            (
                ld / (clean - corrupted),
                "subtract the corrupted logit difference before dividing: (logit_diff − corrupted) / "
                "(clean − corrupted), so that the corrupted run gives 0.",
            ),
            (
                (ld - corrupted) / clean,
                "divide by (clean − corrupted), not by the clean logit difference alone, so that the clean run "
                "gives 1.",
            ),
            (
                (ld - corrupted) / (abs(clean) + abs(corrupted)),
                f"divide by clean − corrupted, not by |clean| + |corrupted|. The two agree only when the runs have "
                f"opposite signs; here both are positive (clean {clean:g}, corrupted {corrupted:g}, as the "
                f"lesson's 'abc' corruption gives), and the clean run must still give exactly 1.",
            ),
            (-ref, "the sign is flipped: patching in everything from the clean run should give +1."),
            ((ld - clean) / (clean - corrupted), "that is 0 at the clean run: the corrupted run should give 0."),
            (
                1 - ref,
                "that is 1 minus the score: it gives 1 at the corrupted run and 0 at the clean run. Measure the "
                "distance from the corrupted run: (logit_diff − corrupted) / (clean − corrupted).",
            ),
            (
                ref.clamp(0, 1),
                "do not clamp the scores to [0, 1]: a patch can recover more than the clean run (above 1) or push "
                "the other way (below 0), and the lesson reads both.",
            ),
        ]
        expect_close(out, ref, name, f"scores (clean {clean:g}, corrupted {corrupted:g})", hints=hints)
        ends = call(fn, torch.tensor([corrupted, clean]), clean, corrupted, name=name)
        expect_close(ends, torch.tensor([0.0, 1.0]), name, "scores of the corrupted and clean runs")
    passed(name, "0 for the corrupted run, 1 for the clean run")


# --- activation patching sweeps ---------------------------------------------------------

# The shortest template ("When A and B went to the PLACE, S gave the OBJECT to"): 15 positions.
_TEMPLATE = ("When", ",")


def _fresh(model, n: int = 3, name: str = "your function"):
    """Clean and corrupted prompts, the clean cache and the normalised metric, on the model's device.

    The metric scores the logits of one copy of the batch, ``[n, position, vocab]``; given more
    prompts than that (the logits of every copy at once) it says so instead of quietly scoring
    the first copy, which is what indexing with the batch's answers would do.
    """
    device = next(model.parameters()).device
    pairs = patching_pairs(model, n=n, seed=LESSON_03_CHECKS, template=_TEMPLATE).to(device)
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(pairs.clean)
        corrupted_logits = model(pairs.corrupted)

    def ld(logits):
        final = logits[:, -1]
        return (final.gather(-1, pairs.answers[:, None]) - final.gather(-1, pairs.distractors[:, None])).mean()

    clean, corrupted = ld(clean_logits).item(), ld(corrupted_logits).item()

    def metric(logits):
        if logits.ndim == 3 and logits.shape[0] != n and logits.shape[0] % n == 0:
            raise CheckFailed(
                f"`{name}` gave the metric the logits of {logits.shape[0]} prompts, every copy at once, but it "
                f"scores one copy of the batch ({n} prompts: [{n}, position, vocab]); the lesson's metric would "
                f"quietly score the first copy only. Split the logits into copies, `logits.view(n_copies, {n}, "
                "...)`, and call the metric on each copy."
            )
        return (ld(logits) - corrupted) / (clean - corrupted)

    return pairs, cache, metric


def _one_cpu_thread(check: Callable) -> Callable:
    """Run a model check on one CPU thread (where the model is on the CPU), then restore the setting.

    Its forward passes are small (a few prompts of 15 tokens), so a second thread gains little, while on
    a busy two-core machine torch's threads wait on each other: there the same check took 2 to 5 s on
    one thread and 15 to 25 s on two.
    """

    @functools.wraps(check)
    def run(fn: Callable, model) -> None:
        threads = torch.get_num_threads()
        if next(model.parameters()).device.type == "cpu":
            torch.set_num_threads(1)
        try:
            check(fn, model)
        finally:
            torch.set_num_threads(threads)

    return run


# A reference sweep depends only on the model's weights and the fixed check prompts, so it is
# computed once per model and weights (a second check, e.g. after a fix, reuses it).
_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reference(model, key: str, compute: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        weights = float(sum(p.double().sum() for p in model.parameters()))
    cached = _REFERENCES.setdefault(model, {})
    if (key, weights) not in cached:
        with torch.no_grad():
            cached[(key, weights)] = torch.as_tensor(compute(*args, **kwargs)).float().cpu()
    return cached[(key, weights)]


def _sweep(model, corrupted, clean_cache, hook_names, mask, metric, rows="repeat", view="copy", read="copy"):
    """``[layer, patch]``: one forward pass per hook name, patch ``j`` putting in the clean activation
    wherever ``mask[j]`` (``[patch, position]`` or ``[patch, position, head]``) is true.

    With the defaults this is the batched sweep the lesson teaches: ``corrupted.repeat(k, 1)``
    stacks ``k`` whole copies of the batch, the hook views the activation as ``[copy, batch, ...]``
    and copy ``j``'s logits are ``logits.view(k, batch, ...)[j]``. The other layouts are the wrong
    answers a learner gets by mixing them up: ``rows="interleave"`` builds the batch with
    ``repeat_interleave`` (the copies of one prompt next to each other), ``view="batch"`` has the
    hook read the rows as ``[batch, copy, ...]`` and ``read="batch"`` splits the logits that way;
    ``read="both"`` gives both splits of the same passes, ``[2, layer, patch]``.
    """
    batch, k = corrupted.shape[0], len(mask)
    tokens = corrupted.repeat(k, 1) if rows == "repeat" else corrupted.repeat_interleave(k, 0)
    out = {"copy": [], "batch": []}
    for hook_name in hook_names:
        clean = clean_cache[hook_name]
        m = mask.to(clean.device)

        def patch(act, hook=None, clean=clean, m=m):
            rest = act.shape[1:]
            if view == "copy":
                act = torch.where(m[:, None, ..., None], clean[None], act.view(k, batch, *rest))
            else:
                act = torch.where(m[None, ..., None], clean[:, None], act.view(batch, k, *rest))
            return act.reshape(k * batch, *rest)

        logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, patch)])
        splits = {
            "copy": logits.view(k, batch, *logits.shape[1:]),
            "batch": logits.view(batch, k, *logits.shape[1:]).transpose(0, 1),
        }
        for split in ("copy", "batch") if read == "both" else (read,):
            out[split].append(torch.stack([torch.as_tensor(metric(lg)) for lg in splits[split]]))
    if read == "both":
        return torch.stack([torch.stack(out["copy"]), torch.stack(out["batch"])]).float().cpu()
    return torch.stack(out[read]).float().cpu()


def _layout_mistakes(model, key, corrupted, clean_cache, hook_names, mask, metric, copies: str):
    """(wrong answer, message) for each way of mixing up the layout of the copies (computed once per
    model and ``key``, the sweep's name)."""
    stacked = f"`.view({copies}, batch, ...)`"
    hook = (
        f"your hook views the activation as [batch, copy, ...], but `corrupted.repeat(n, 1)` stacks whole "
        f"copies of the batch one after another (row r is copy r // batch, prompt r % batch): view it as "
        f"{stacked}."
    )
    interleave = (
        "`repeat_interleave` puts the copies of each prompt next to each other (row r is prompt r // n), but "
        f"your hook treats the rows as whole copies of the batch: build the batch with `corrupted.repeat(n, 1)`, "
        f"as the hook's {stacked} assumes."
    )
    read = (
        "the patches are right but the logits are split the wrong way: `repeat` stacks whole copies, so copy "
        f"j's logits are `logits.view({copies}, batch, ...)[j]`, not `logits.view(batch, {copies}, ...)[:, j]`."
    )
    read_interleave = (
        "the patches are right but the logits are split the wrong way: with `repeat_interleave` the copies of "
        f"each prompt are next to each other, so copy j's logits are `logits.view(batch, {copies}, ...)[:, j]`."
    )
    args = (model, corrupted, clean_cache, hook_names, mask, metric)
    runs = {  # (rows, view): both ways of splitting the logits
        layout: _reference(
            model, f"{key}_{'_'.join(layout)}", _sweep, *args, rows=layout[0], view=layout[1], read="both"
        )
        for layout in (("repeat", "batch"), ("interleave", "copy"), ("repeat", "copy"), ("interleave", "batch"))
    }
    return [
        (runs["repeat", "batch"][0], hook),
        (runs["repeat", "batch"][1], hook),
        (runs["interleave", "copy"][0], interleave),
        (runs["interleave", "copy"][1], interleave),
        (runs["repeat", "copy"][1], read),
        (runs["interleave", "batch"][0], read_interleave),
    ]


def _close(out: torch.Tensor, ref: torch.Tensor, atol: float = 2e-3, rtol: float = 1e-2) -> bool:
    return torch.allclose(out.detach().float().cpu(), ref, atol=atol, rtol=rtol)


def _never_patched(out: torch.Tensor) -> bool:
    return bool(out.detach().float().abs().max() < 1e-4)


def _one_score_per_row(out: torch.Tensor) -> bool:
    out = out.detach().float().cpu()
    return torch.allclose(out, out[:, :1].expand_as(out), atol=1e-4)


def _reject_whole_sweep_mistakes(out: torch.Tensor, name: str, hook: str, same_score: str) -> None:
    """The two mistakes a sweep shows as a whole, before any score-by-score comparison: no patch took
    effect (every score 0), or every copy got the same patch (one score per layer)."""
    if _never_patched(out):
        raise CheckFailed(f"`{name}`: " + _NEVER_PATCHED.format(hook=hook))
    if _one_score_per_row(out):
        raise CheckFailed(f"`{name}` {same_score}")


_NEVER_PATCHED = (
    "every score is 0, the corrupted run's own: the patch never changed the model. Does your hook return "
    "the edited activation, is it attached to `{hook}`, and do the values come from `clean_cache`?"
)


@_one_cpu_thread
def check_act_patch_by_position(fn: Callable, model) -> None:
    """fn(model, corrupted, clean_cache, metric, hook) -> [layer, position].

    ``resid_pre`` is compared with ``patching.get_act_patch_resid_pre`` (one forward pass per layer
    and position), the other hooks with the check's batched sweep (one pass per layer).
    """
    from transformer_lens import patching

    name = _name(fn, "act_patch_by_position")
    pairs, cache, metric = _fresh(model, name=name)
    L, n_pos = model.cfg.n_layers, pairs.clean.shape[1]
    eye = torch.eye(n_pos, dtype=torch.bool)
    hooks = ["resid_pre", "attn_out"] + ([] if model.cfg.attn_only else ["mlp_out"])
    for hook in hooks:
        names = [f"blocks.{l}.hook_{hook}" for l in range(L)]
        explain = {
            KeyError: f"Read the clean activation from `clean_cache[f'blocks.{{layer}}.hook_{hook}']`.",
            RuntimeError: f"`hook_{hook}` is [batch, position, d_model]; with one copy of the batch per position "
            f"the hook sees [{n_pos} * batch, position, d_model].",
        }
        with torch.no_grad():
            out = call(fn, model, pairs.corrupted, cache, metric, hook, name=name, explain=explain)
            out = expect_tensor(out, (L, n_pos), ["layer", "position"], name)
            if hook == "resid_pre":  # once against TransformerLens's one-site-per-pass sweep
                ref = _reference(model, hook, patching.get_act_patch_resid_pre, model, pairs.corrupted, cache, metric)
            else:
                ref = _reference(model, hook, _sweep, model, pairs.corrupted, cache, names, eye, metric)
            if _close(out, ref):
                continue
            _reject_whole_sweep_mistakes(
                out,
                name,
                f"blocks.{{layer}}.hook_{hook}",
                "gives the same score at every position of a layer: patch one position per copy of the batch "
                "(copy j gets the clean activation at position j only).",
            )
            out = out.detach().float().cpu()
            hints = []
            if hook == "resid_pre":
                after_last = torch.zeros(1, n_pos)
                after_last[0, -1] = 1.0  # after the last layer only the final position reaches the logits
                hints.append(
                    (
                        torch.cat([ref[1:], after_last]),
                        "that looks like `hook_resid_post`: patch the stream *before* each layer.",
                    )
                )
            shifted = "your score at position j is the true score at position j {} 1: copy j must get the clean "
            shifted += "activation at position j itself. Look for an index or a mask shifted by one."
            hints += [  # compared on every position but the one the shift leaves undefined
                (torch.cat([out[:, :1], ref[:, :-1]], 1), shifted.format("−")),
                (torch.cat([ref[:, 1:], out[:, -1:]], 1), shifted.format("+")),
            ]
            hints += _layout_mistakes(model, hook, pairs.corrupted, cache, names, eye, metric, "n_pos")
        expect_close(out, ref, name, f"scores ({hook})", atol=2e-3, rtol=1e-2, hints=hints)
    others = " and ".join(hooks[1:])
    passed(name, f"matches patching.get_act_patch_resid_pre, and a batched sweep of {others}")


@_one_cpu_thread
def check_act_patch_heads(fn: Callable, model) -> None:
    """fn(model, corrupted, clean_cache, metric, kind) -> [layer, head].

    ``z`` is compared with ``patching.get_act_patch_attn_head_out_all_pos`` (one forward pass per
    layer and head), ``q``, ``k`` and ``v`` with the check's batched sweep (one pass per layer).
    """
    from transformer_lens import patching

    name = _name(fn, "act_patch_heads")
    pairs, cache, metric = _fresh(model, name=name)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    n_pos = pairs.clean.shape[1]
    every_position = torch.zeros(H, n_pos, H, dtype=torch.bool)  # copy h: head h at every position
    every_position[torch.arange(H), :, torch.arange(H)] = True
    refs = {}
    for kind in "zqkv":
        names = [f"blocks.{l}.attn.hook_{kind}" for l in range(L)]
        explain = {
            KeyError: "The attention hooks live under `.attn`: read "
            f"`clean_cache[f'blocks.{{layer}}.attn.hook_{kind}']`.",
            RuntimeError: f"`hook_{kind}` is [batch, position, head, d_head]; viewed as copies of the batch it is "
            "[copy, batch, position, head, d_head], so the head is the fourth axis.",
        }
        with torch.no_grad():
            out = call(fn, model, pairs.corrupted, cache, metric, kind, name=name, explain=explain)
            out = expect_tensor(out, (L, H), ["layer", "head"], name)
            if kind == "z":  # once against TransformerLens's one-site-per-pass sweep
                compute = patching.get_act_patch_attn_head_out_all_pos
                ref = _reference(model, "head_z", compute, model, pairs.corrupted, cache, metric)
            else:
                ref = _reference(
                    model, "head_" + kind, _sweep, model, pairs.corrupted, cache, names, every_position, metric
                )
            refs[kind] = ref
            if _close(out, ref):
                continue
            _reject_whole_sweep_mistakes(
                out,
                name,
                f"blocks.{{layer}}.attn.hook_{kind}",
                "gives every head of a layer the same score: in copy h patch head h only "
                f"(the head dimension of `hook_{kind}` is the third: [batch, position, head, d_head]).",
            )
            final = torch.zeros(H, n_pos, H, dtype=torch.bool)
            final[torch.arange(H), -1, torch.arange(H)] = True
            hints = [
                (
                    _reference(
                        model, f"head_{kind}_final", _sweep, model, pairs.corrupted, cache, names, final, metric
                    ),
                    f"you patched each head at the final position only: copy h should get head h's clean "
                    f"`hook_{kind}` at every position (`[:, :, h]`), as `get_act_patch_attn_head_*_all_pos` does.",
                )
            ]
            if kind != "z":
                hints.append(
                    (
                        refs["z"],
                        f"those are the scores of patching `hook_z`: for kind {kind!r} patch "
                        f"`blocks.{{layer}}.attn.hook_{kind}`.",
                    )
                )
            hints += _layout_mistakes(
                model, "head_" + kind, pairs.corrupted, cache, names, every_position, metric, "n_heads"
            )
        expect_close(out, ref, name, f"scores (hook_{kind})", atol=2e-3, rtol=1e-2, hints=hints)
    passed(name, "matches patching.get_act_patch_attn_head_out_all_pos, and a batched sweep of q, k and v")


# --- path patching --------------------------------------------------------------------------

# Wrong ways to path-patch, each computed the way a learner would write it, with what it gets wrong.
_PATH_MISTAKES = {
    "sender kept corrupted": (
        "every score is 0, the corrupted run's own: in step 1 the sender kept its corrupted output (or step 2 "
        "never put the kept inputs back), so nothing clean reached the receivers. In step 1 give the sender its "
        "clean output from `clean_cache`, and in step 2 patch the kept inputs into the receivers."
    ),
    "nothing frozen": (
        "step 1 let the other heads react to the clean sender: the heads after it changed too, and their change "
        "reached the receivers. Freeze every head other than the sender at its corrupted output "
        "(`corrupted_cache[f'blocks.{layer}.attn.hook_z']`) in every layer, not only in the sender's layer."
    ),
    "MLPs frozen": (
        "step 1 also froze the MLPs: freeze only the attention heads (`hook_z`) and let the MLPs recompute, so "
        "that a path from the sender through an MLP into a receiver still counts."
    ),
    "whole layers": (
        "step 2 patched every head of a receiver's layer: patch only the receiver heads, `act[:, :, h]` for each "
        "(layer, h) in `receivers`; the other heads of that layer keep their corrupted input."
    ),
    "sender in step 2": (
        "step 2 also put in the sender's clean output: in step 2 patch only the receivers' inputs, so that the "
        "sender acts only through them."
    ),
    "sender's head in every layer": (
        "step 1 made the sender's head index clean in every layer: head (1, 3) is not head (2, 3). Give only the "
        "sender's own layer its clean output; in every other layer that head is frozen like the rest."
    ),
    "step 1's hooks in step 2": (
        "step 2 kept step 1's freezing hooks: every head's output is pinned to the corrupted run (the sender's to "
        "the clean one), so the receivers' patched inputs never reach their outputs and you measured the sender's "
        "own path to the logits. In step 2 hook only the receivers' inputs and let every head recompute."
    ),
}


# A single sender's path into the receivers moves the normalised score by only a few thousandths,
# and leaving the other heads unfrozen changes it by about 0.002, so path patching is compared more
# tightly than the sweeps: a correct answer differs from the reference only by float rounding (~1e-6).
_PATH_ATOL, _PATH_RTOL = 1e-4, 1e-3


def _path_patch_one(
    model, corrupted, clean_cache, corrupted_cache, sender, receivers, receiver_input, metric, mistake=None
):
    """The slow reference: one sender, two forward passes (``mistake``: one of ``_PATH_MISTAKES``)."""
    L = model.cfg.n_layers
    sl, sh = sender

    def clean_sender(z, hook):
        z = z.clone()
        z[:, :, sh] = clean_cache[f"blocks.{sl}.attn.hook_z"][:, :, sh]
        return z

    def freeze(z, hook, layer):
        z = corrupted_cache[f"blocks.{layer}.attn.hook_z"].clone()
        if (layer == sl or mistake == "sender's head in every layer") and mistake != "sender kept corrupted":
            z[:, :, sh] = clean_cache[f"blocks.{layer}.attn.hook_z"][:, :, sh]
        return z

    kept = {}

    def keep(act, hook, layer):
        kept[layer] = act.clone()

    layers = sorted({l for l, _ in receivers})
    if mistake == "nothing frozen":
        hooks = [(f"blocks.{sl}.attn.hook_z", clean_sender)]
    else:
        hooks = [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: freeze(z, hook, l)) for l in range(L)]
    if mistake == "MLPs frozen":
        hooks += [
            (f"blocks.{l}.hook_mlp_out", lambda a, hook, l=l: corrupted_cache[f"blocks.{l}.hook_mlp_out"])
            for l in range(L)
        ]
    hooks += [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: keep(a, hook, l)) for l in layers]
    model.run_with_hooks(corrupted, fwd_hooks=hooks)

    def patch(act, hook, layer):
        act = act.clone()
        for l, h in receivers:
            if l == layer:
                heads = slice(None) if mistake == "whole layers" else h
                act[:, :, heads] = kept[layer][:, :, heads]
        return act

    hooks = [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: patch(a, hook, l)) for l in layers]
    if mistake == "sender in step 2":
        hooks.append((f"blocks.{sl}.attn.hook_z", clean_sender))
    if mistake == "step 1's hooks in step 2":
        hooks += [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: freeze(z, hook, l)) for l in range(L)]
    return metric(model.run_with_hooks(corrupted, fwd_hooks=hooks))


def _path_patch_reference(
    model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric, mistake=None
):
    args = (model, corrupted, clean_cache, corrupted_cache)
    return torch.stack(
        [
            torch.as_tensor(_path_patch_one(*args, s, receivers, receiver_input, metric, mistake=mistake))
            for s in senders
        ]
    ).cpu()


@_one_cpu_thread
def check_path_patch(fn: Callable, model) -> None:
    """fn(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric) -> [sender].

    The receivers are the even heads of every layer after the first, so that patching whole
    layers gives other scores than patching the receivers.
    """
    name = _name(fn, "path_patch")
    pairs, cache, metric = _fresh(model, name=name)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        # only the cache is read: the head unembeds the last position alone (the same activations)
        _, corrupted_cache = model.run_with_cache(pairs.corrupted, logits_to_keep=1)
    senders = [(0, h) for h in range(H)] + [(1, 1)]
    receivers = [(l, h) for l in range(1, L) for h in range(0, H, 2)]
    for receiver_input in ("q", "k", "v"):
        args = (model, pairs.corrupted, cache, corrupted_cache, senders, receivers, receiver_input, metric)
        with torch.no_grad():
            out = call(fn, *args, name=name)
            out = expect_tensor(out, (len(senders),), ["sender"], name)
            ref = _reference(model, "path_" + receiver_input, _path_patch_reference, *args)
            if _close(out, ref, atol=_PATH_ATOL, rtol=_PATH_RTOL):
                continue
            direct = _direct_patch(model, pairs.corrupted, cache, receivers, receiver_input, metric)
            hints = [
                (
                    direct.expand(len(senders)),
                    "every sender gives the same score: you patched the receivers' clean inputs, which carry "
                    "every path at once. Take them from a corrupted run in which only the sender is clean.",
                ),
                (torch.zeros(len(senders)), _PATH_MISTAKES["sender kept corrupted"]),
            ]
            for mistake, message in _PATH_MISTAKES.items():
                if mistake == "sender kept corrupted" or (mistake == "MLPs frozen" and model.cfg.attn_only):
                    continue
                key = f"path_{receiver_input}_{mistake}"
                hints.append((_reference(model, key, _path_patch_reference, *args, mistake=mistake), message))
        expect_close(
            out,
            ref,
            name,
            f"path-patching scores (receivers' hook_{receiver_input})",
            atol=_PATH_ATOL,
            rtol=_PATH_RTOL,
            hints=hints,
        )
    passed(name, "matches a reference that patches one sender at a time")


def _direct_patch(model, corrupted, clean_cache, receivers, receiver_input, metric):
    layers = sorted({l for l, _ in receivers})

    def patch(act, hook, layer):
        act = act.clone()
        for l, h in receivers:
            if l == layer:
                act[:, :, h] = clean_cache[f"blocks.{l}.attn.hook_{receiver_input}"][:, :, h]
        return act

    hooks = [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: patch(a, hook, l)) for l in layers]
    with torch.no_grad():
        return torch.as_tensor(metric(model.run_with_hooks(corrupted, fwd_hooks=hooks))).cpu().reshape(1)


# --- attribution patching, rank correlation, ablation ---------------------------------------


def check_attribution_scores(fn: Callable) -> None:
    """fn(clean [batch, pos, head, d_head], corrupted, grad) -> [head]: the linear estimate of patching each head."""
    name = _name(fn, "attribution_scores")
    g = torch.Generator().manual_seed(33)
    clean, corrupted, grad = (torch.randn(3, 4, 5, 6, generator=g) for _ in range(3))
    out = expect_tensor(call(fn, clean, corrupted, grad, name=name), (5,), ["head"], name)
    product = (clean - corrupted) * grad
    ref = product.sum((0, 1, 3))
    hints = [
        (-ref, "the sign is flipped: the change is clean minus corrupted (we patch clean into corrupted)."),
        ((clean * grad).sum((0, 1, 3)), "multiply the gradient by the *change* of the activation, clean − corrupted."),
        (product.mean((0, 1, 3)), "sum over prompts, positions and d_head, do not average."),
        (
            product.mean(0).sum((0, 2)),
            "you averaged over the prompts; sum over them too: the gradient already comes from the batch's "
            "mean logit difference, so each prompt's share is in it.",
        ),
        (
            (clean - corrupted).sum((0, 1, 3)) * grad.sum((0, 1, 3)),
            "you multiplied the sums; multiply the change and the gradient element by element, then sum.",
        ),
        (
            product.abs().sum((0, 1, 3)),
            "you summed the absolute values of the products: sum the products with their signs. Patching a head "
            "changes all its positions and dimensions at once, and their effects can cancel.",
        ),
        (
            ref.abs(),
            "keep the sign of each score: a head whose clean activation pushes the logit difference down gets "
            "a negative estimate.",
        ),
        (
            product[:, -1].sum((0, 2)),
            "you used the final position only: sum over every position, since the patch puts in the head's "
            "clean activation at all of them.",
        ),
    ]
    expect_close(out, ref, name, "attribution scores", hints=hints)
    passed(name)


def check_rank_correlation(fn: Callable) -> None:
    """fn(x [n], y [n]) -> float: Spearman's rank correlation (no ties)."""
    name = _name(fn, "rank_correlation")
    g = torch.Generator().manual_seed(34)
    x = torch.randn(40, generator=g)
    y = x.pow(3) * 5 + 0.3 * torch.randn(40, generator=g)
    y[0] = 40.0  # one outlier: Pearson's correlation and Spearman's differ
    rx, ry = x.argsort().argsort().float(), y.argsort().argsort().float()
    ref = torch.corrcoef(torch.stack([rx, ry]))[0, 1].item()
    out = as_number(call(fn, x, y, name=name))
    if out != out:
        raise CheckFailed(f"`{name}` should return a number (a float or a one-element tensor).")

    def cosine(a, b):
        return ((a * b).sum() / (a.norm() * b.norm())).item()

    mistakes = [
        (
            torch.corrcoef(torch.stack([x, y]))[0, 1].item(),
            "gives Pearson's correlation of the values; correlate their ranks.",
        ),
        (
            torch.corrcoef(torch.stack([x.argsort().float(), y.argsort().float()]))[0, 1].item(),
            "uses the order `argsort` gives, not the ranks: the rank of each value is `argsort().argsort()`.",
        ),
        (
            cosine(rx, ry),
            "did not centre the ranks: subtract each ranking's mean before taking the cosine (Pearson's "
            "correlation is the cosine of the centred values).",
        ),
        (cosine(rx + 1, ry + 1), "did not centre the ranks: subtract each ranking's mean before taking the cosine."),
        (
            -ref,
            "has the right size but the wrong sign: one ranking is in descending order. Rank both in ascending "
            "order (`argsort().argsort()` of each), so that a value and an increasing function of it correlate +1.",
        ),
    ]
    if abs(out - ref) > 1e-4:
        for wrong, message in mistakes:
            if abs(out - wrong) < 1e-4:
                raise CheckFailed(f"`{name}` {message}")
        raise CheckFailed(f"`{name}` gives {out:.4f}; Spearman's rank correlation is {ref:.4f}.")
    same = as_number(call(fn, x, x.exp(), name=name))
    if abs(same - 1) > 1e-4:
        raise CheckFailed(f"`{name}` of a variable and an increasing function of it should be 1, not {same:.4f}.")
    passed(name)


def check_ablate_except(fn: Callable) -> None:
    """fn(z [batch, pos, head, d_head], keep [head] bool, means [pos, head, d_head]) -> the same shape as z."""
    name = _name(fn, "ablate_except")
    g = torch.Generator().manual_seed(35)
    z = torch.randn(3, 4, 5, 2, generator=g)
    means = torch.randn(4, 5, 2, generator=g)
    keep = torch.tensor([True, False, False, True, False])
    out = expect_tensor(call(fn, z, keep, means, name=name), z.shape, ["batch", "position", "head", "d_head"], name)
    k = keep[None, None, :, None]
    ref = torch.where(k, z, means.expand_as(z))
    own_mean = (
        "you replaced the other heads by a mean of `z`, this batch's own activations: use `means`, the mean "
        "activation over the reference prompts, one for each position and head."
    )
    hints = [
        (torch.where(k, means.expand_as(z), z), "that ablates the kept heads and keeps the others: swap the two."),
        (torch.where(k, z, torch.zeros_like(z)), "replace the other heads by their mean activation, not by zero."),
        (
            torch.where(k, z, means.mean(0).expand_as(z)),
            "each position has its own mean: `means` is [position, head, d_head].",
        ),
        (
            torch.where(k, z, means[:1].expand_as(z)),
            "you used the first position's mean at every position: each position has its own, `means[pos]`.",
        ),
        (torch.where(k, z, z.mean(0, keepdim=True).expand_as(z)), own_mean),
        (torch.where(k, z, z.mean((0, 1), keepdim=True).expand_as(z)), own_mean),
    ]
    expect_close(out, ref, name, "activations", hints=hints)
    passed(name)
