"""The machinery every exercise check shares.

A check runs the learner's function on fresh inputs, compares it with a reference and
prints one success line. Problems raise ``CheckFailed``, which Jupyter shows as a single
red message instead of a traceback. ``call`` turns a stub, an exception or an in-place edit
into a sentence; ``expect_tensor`` names the dimension that is off; ``expect_close`` and
``expect_number`` compare with the reference and recognise known wrong answers (a tensor returned on
a GPU, as a sparse tensor, or a NumPy number is compared as the same values on the CPU);
``call_own_generator`` calls a function that takes a seed and says so if it used a global
random generator instead of its own; ``call_seeded`` runs one under a fixed global seed.
"""

from __future__ import annotations

import math
import numbers
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


class CheckFailed(AssertionError):
    """An exercise check failed. Jupyter shows only the message, in two steps.

    A message that names a mistake and then says how to fix it ("you read the first position; the next token is
    predicted at the last one, logits[0, -1]") is shown in two steps: the first time a check fails with it, only
    what is wrong (up to the first semicolon or full stop), and that the fix follows on a second failure; from the
    second time on, the whole message. ``str()`` of the error is always the whole message."""

    def _render_traceback_(self) -> list[str]:  # IPython hook: no traceback, just the sentence
        message = self.args[0]
        what, fix = two_steps(message)
        _FAILURES[message] = _FAILURES.get(message, 0) + 1
        if fix and _FAILURES[message] == 1:
            return [
                f"\x1b[1;31m✗ {what}\x1b[0m",
                "\x1b[2m  (Try again; if the check fails this way once more, it also says how to fix it.)\x1b[0m",
            ]
        return [f"\x1b[1;31m✗ {message}\x1b[0m"]


# How many times each message has been shown in this kernel: the first time a diagnosis, then its fix as well.
_FAILURES: dict[str, int] = {}
# Where a mistake's name ends and its fix begins: a semicolon, or a full stop that ends a sentence (not "e.g.").
# A closing parenthesis that tells what to write ("... token t+1 (use logits[:, :-1] ...).") is a fix as well.
# So is what follows a colon when it is an instruction ("...: fill them with -inf instead").
_INSTRUCTION = r"(?:use|fill|check|try|start with|apply|divide|multiply|return|add|subtract|take|put|work on|compare)"
_STEP = re.compile(
    r"; |(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<![\d.])\. (?=[A-Z`(])"
    rf"| \((?={_INSTRUCTION} )|: (?={_INSTRUCTION} )"
)
ONE_STEP = ("is still the stub",)  # nothing to diagnose: say at once what to do


def two_steps(message: str) -> tuple[str, str]:
    """(what is wrong, how to fix it) of a check's message; the fix is "" where the message is one step (a stub,
    a shape, a number that differs: nothing there gives an answer away)."""
    found = _STEP.search(message)
    if not found or any(text in message for text in ONE_STEP) or found.start() < 12 or len(message) - found.end() < 12:
        return message, ""
    fix = message[found.end() :]
    if found.group(0) == " (":
        fix = re.sub(r"\)\.?$", ".", fix)
    fix = fix[0].upper() + fix[1:]
    return message[: found.start()].rstrip(":") + ".", fix


# The learner's functions that passed their check in this kernel; later cells run on them (``yours_or_reference``).
_PASSED: list[Callable] = []


def passed(name: str, detail: str = "", fn: Callable | None = None) -> None:
    """Print the check's success line; with ``fn``, remember that this function passed, so that later cells
    run on it."""
    if fn is not None and not any(f is fn for f in _PASSED):
        _PASSED.append(fn)
    print(f"✓ {name} passed" + (f": {detail}" if detail else "."))


def yours_or_reference(fn: Any, reference: Callable) -> Callable:
    """The learner's ``fn`` where it has passed its check in this kernel, else the course's ``reference``, with one
    line saying so: a wrong or unfinished answer costs a sentence, not the rest of the lesson. A function
    defined again after it passed counts as not checked (the check ran on the old one)."""
    if any(f is fn for f in _PASSED):
        return fn
    name = getattr(reference, "__name__", "this function")
    mine = getattr(fn, "__name__", None)
    again = mine is not None and any(getattr(f, "__name__", None) == mine for f in _PASSED)
    why = "was defined again after it passed its check" if again else "has not passed its check"
    print(f"↪ Your `{mine or name}` {why}; the cells below use the course's `{name}` (run the check to use yours).")
    return reference


def call(
    fn: Callable,
    *args,
    name: str | None = None,
    in_place_ok: bool = False,
    explain: Mapping[type[BaseException], str] | None = None,
    **kwargs,
) -> Any:
    """Call the learner's function, turning its failures into clear sentences.

    ``in_place_ok``: the function may edit its tensor arguments (a hook that edits the
    activation and returns it, or returns None); the caller then reads the edited copy.
    ``explain``: for an exception of one of these types, say this sentence (the likely
    cause) after the exception's own first line.
    """
    name = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise CheckFailed(f"pass the function itself, e.g. check(...)(my_fn), not {type(fn).__name__}")
    snapshot = [a.clone() for a in args if isinstance(a, torch.Tensor)]
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(
            f"`{name}` is still the stub: replace the `raise NotImplementedError(...)` "
            f"line with your code, run the cell, then run this check again."
        ) from None
    except CheckFailed:
        raise
    except Exception as e:  # the learner's bug: say what and where, briefly
        why = next((text for kind, text in (explain or {}).items() if isinstance(e, kind)), "")
        raise CheckFailed(
            f"`{name}` raised {type(e).__name__}: {_first_line(e)}" + (f" {why}" if why else "")
        ) from None
    if not in_place_ok:
        after = [a for a in args if isinstance(a, torch.Tensor)]
        for k, (before, now) in enumerate(zip(snapshot, after)):
            if before.shape != now.shape or not torch.equal(before, now):
                raise CheckFailed(
                    f"`{name}` changed its input tensor (argument {k + 1}) in place. "
                    f"Work on a copy, or use out-of-place operations (x = x * 2, not x *= 2)."
                )
    given = _devices([*args, *kwargs.values()])
    if isinstance(out, torch.Tensor):
        return comparable(out, name, given)
    if type(out) in (tuple, list):  # several results: each as the check compares it
        return type(out)(comparable(o, name, given) if isinstance(o, torch.Tensor) else o for o in out)
    return out


def _devices(values: Sequence[Any]) -> set[torch.device]:
    """The devices of what a check gives the learner's function: its tensors (also in a list or tuple),
    and the device of a model's weights."""
    found: set[torch.device] = set()
    for v in values:
        if isinstance(v, torch.Tensor):
            found.add(v.device)
        elif isinstance(v, (list, tuple)):
            found |= {x.device for x in v if isinstance(x, torch.Tensor)}
        elif callable(getattr(v, "parameters", None)):
            try:
                found.add(next(iter(v.parameters())).device)
            except Exception:  # no weights, or a wrapper that cannot list them here
                pass
    return found


def comparable(out: torch.Tensor, name: str, given: set[torch.device] | None = None) -> torch.Tensor:
    """A learner's tensor as a check compares it: a sparse tensor as its dense values; a tensor on a
    device none of the check's inputs were on (a GPU) moved to the CPU (with ``given``, those devices).
    A meta or nested tensor fails in one sentence: the first holds no values, the second no one shape."""
    if out.is_nested:
        raise CheckFailed(
            f"`{name}` returned a nested tensor, which has no single shape to compare: return one ordinary "
            "tensor (torch.stack the pieces when they have the same shape)."
        )
    if out.is_meta:
        raise CheckFailed(
            f"`{name}` returned a tensor on the meta device, which holds no values (only a shape): compute it "
            "from the inputs, on their device."
        )
    if out.layout != torch.strided:  # sparse
        out = out.to_dense()
    if given is not None and out.device.type != "cpu" and out.device not in given:
        out = out.cpu()
    return out


_GLOBAL_GENERATORS = {
    "torch": (
        "uses (or reseeds) torch's global random generator (torch.manual_seed, or torch.rand, randn, randint or "
        "randperm without generator=): draw from your own torch.Generator().manual_seed(seed), so that the result "
        "depends on the seed alone and other code's randomness is left alone."
    ),
    "numpy": (
        "uses (or reseeds) NumPy's global random generator (np.random.seed, np.random.rand, ...): draw from your "
        "own torch.Generator().manual_seed(seed) (or np.random.default_rng(seed)), so that other code's randomness "
        "is left alone."
    ),
    "python": (
        "uses (or reseeds) Python's global random generator (random.seed, random.shuffle, ...): draw from your "
        "own torch.Generator().manual_seed(seed) (or random.Random(seed)), so that other code's randomness is "
        "left alone."
    ),
}


def _global_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    try:
        import numpy

        states["numpy"] = numpy.random.get_state()
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        pass
    return states


def _set_global_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "numpy" in states:
        import numpy

        numpy.random.set_state(states["numpy"])


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if hasattr(a, "shape") and hasattr(b, "shape"):  # a NumPy array
        return a.shape == b.shape and bool((a == b).all())
    return a == b


def call_own_generator(fn: Callable, *args, name: str | None = None, **kwargs) -> Any:
    """``call`` for a function that takes a seed: it must draw from a generator of its own.

    If it used or reseeded torch's, NumPy's or Python's global generator, say which; either way
    the global generators are left as they were before the call.
    """
    name = name or getattr(fn, "__name__", "your function")
    before = _global_states()
    try:
        out = call(fn, *args, name=name, **kwargs)
        after = _global_states()
    finally:
        _set_global_states(before)
    for which, message in _GLOBAL_GENERATORS.items():
        if which in before and not _same_state(before[which], after[which]):
            raise CheckFailed(f"`{name}` {message}")
    return out


def call_seeded(fn: Callable, *args, seed: int, name: str | None = None, **kwargs) -> Any:
    """``call`` with torch's global generator seeded to ``seed`` for the call and restored after it:
    the check's runs of a function that draws (or may draw) from it are then repeatable."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return call(fn, *args, name=name, **kwargs)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def expect_tensor(
    out: Any, shape: Sequence[int], dims: Sequence[str], name: str, floating: bool = True
) -> torch.Tensor:
    """Check type, shape (naming the dimension that is off), dtype and finiteness."""
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"`{name}` should return a torch.Tensor, but returned {type(out).__name__}.")
    out = comparable(out, name)
    shape = tuple(shape)
    if out.ndim != len(shape):
        raise CheckFailed(
            f"`{name}` returned a tensor with {out.ndim} dimensions {tuple(out.shape)}; "
            f"expected {len(shape)}: [{', '.join(dims)}] = {shape}."
        )
    for k, (got, want, dim) in enumerate(zip(out.shape, shape, dims)):
        if got != want:
            raise CheckFailed(
                f"`{name}` returned shape {tuple(out.shape)}: dimension {k} ({dim}) is "
                f"{got} but should be {want}. Expected [{', '.join(dims)}] = {shape}."
            )
    if floating and not out.is_floating_point():
        raise CheckFailed(
            f"`{name}` returned dtype {out.dtype}; expected a floating-point tensor "
            f"(did an integer division or a comparison slip in?)."
        )
    if floating and not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).sum().item()
        raise CheckFailed(
            f"`{name}` returned {bad} NaN or infinite value(s). Look for a division "
            f"by zero, a log of zero, or a softmax over -inf everywhere."
        )
    return out


def expect_close(
    out: torch.Tensor,
    ref: torch.Tensor,
    name: str,
    what: str = "values",
    atol: float = 1e-4,
    rtol: float = 1e-3,
    hints: Sequence[tuple[torch.Tensor, str]] = (),
) -> None:
    """Compare with the reference; if a known wrong answer matches instead, say which."""
    out, ref = out.detach().float().cpu(), ref.detach().float().cpu()
    if torch.allclose(out, ref, atol=atol, rtol=rtol):
        return
    for wrong, message in hints:
        if wrong.shape == out.shape and torch.allclose(out, wrong.detach().float().cpu(), atol=atol, rtol=rtol):
            raise CheckFailed(f"`{name}`: {message}")
    err = (out - ref).abs()
    idx = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape)) if err.ndim else ()
    raise CheckFailed(
        f"`{name}` gives the wrong {what}: at index {list(idx)} you have "
        f"{out[idx].item():.4g}, expected {ref[idx].item():.4g} "
        f"({(err > atol + rtol * ref.abs()).float().mean().item():.0%} of entries differ)."
    )


def real_number(x: Any) -> float | int | None:
    """``x`` as a Python number when it is one real number: an int or float, a NumPy number or array of
    one, or a tensor of one element on any device that holds values; else None."""
    if isinstance(x, torch.Tensor):
        if x.numel() != 1 or x.is_meta or x.is_nested or x.is_complex():
            return None
        x = x.item()
    elif type(x).__module__ == "numpy" and getattr(x, "size", None) == 1 and hasattr(x, "item"):
        x = x.item()  # np.float32(2.3), np.array(2.3)
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    return x


def expect_number(out: Any, ref: float, name: str, what: str, tol: float) -> float:
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = comparable(out, name)  # a meta tensor is named as such
    number = real_number(out)
    if number is None:
        raise CheckFailed(f"`{name}` should return a number, but returned {type(out).__name__}.")
    if not math.isfinite(number):
        raise CheckFailed(f"`{name}` returned {number}; expected a finite number.")
    if abs(number - ref) > tol:
        raise CheckFailed(f"`{name}` gives {what} = {number:.4g}; expected {ref:.4g} (within {tol:g}).")
    return float(number)


def as_number(x) -> float:
    """A Python float from a number (also a NumPy one) or a one-element tensor; NaN for anything else."""
    number = real_number(x)
    return float("nan") if number is None else float(number)


def random_pattern(n_heads: int = 3, n: int = 9, seed: int = 0) -> torch.Tensor:
    """A causal attention pattern ``[head, query, key]`` whose rows sum to 1."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_heads, n, n, generator=g) * 2
    scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    return scores.softmax(-1)
