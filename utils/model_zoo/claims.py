"""A lesson's claims off the zoo: ``zoo_claims(MODEL)``.

Every claim a lesson makes is an ``assert`` about the zoo model it was written on ("head 1.6 is an
induction head", "the probe reaches 0.95"). On another model (GPT-2, a Llama from the hub, a
folder of random weights) those are open questions, not facts: the lesson should run to its end
and say which of them do not hold there. ``zoo_claims(MODEL)``, called in a lesson's model cell,
does nothing on a zoo model; on any other model it rewrites every later cell's ``assert`` so that
a claim that fails prints one line (which claim does not hold there, and why) instead of stopping
the lesson. Exercise checks are functions, not asserts in a cell, so they still judge your code.

The rewrite is an IPython AST transformer, installed in the running kernel.
"""

from __future__ import annotations

import ast

from utils.model_zoo.registry import ZOO

_shown: set[tuple[str, str]] = set()  # (model, claim) pairs already reported: a claim in a loop prints once
MODEL_NAME = "_course_zoo_model"  # where, in the kernel's namespace, the rewritten asserts find the model's name


def _report(model: str, text: str, truth, message) -> None:
    """One claim off the zoo: evaluate it, and print one line where it does not hold."""
    try:
        if truth():
            return
        what, why = "does not hold on", _first_line(message)
    except Exception as error:  # a claim that cannot even be evaluated here (a zoo head this model lacks)
        what, why = "cannot be evaluated on", f"{type(error).__name__}: {str(error)[:80]}"
    if (model, text) in _shown:
        return
    _shown.add((model, text))
    claim = text if len(text) <= 90 else text[:87] + "..."
    print(f"{what} {model}: `{claim}`, a claim about the zoo model" + (f" ({why})" if why else ""))


def _first_line(message) -> str:
    try:
        text = str(message()) if message is not None else ""
    except Exception:  # the message itself may index what this model lacks
        return ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= 100 else first[:97] + "..."


class ClaimsOffTheZoo(ast.NodeTransformer):
    """``assert test, message`` -> ``_course_zoo_claim(<the model's name>, text, lambda: test, lambda: message)``."""

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        no_args = ast.arguments([], [], None, [], [], None, [])
        message = ast.Lambda(no_args, node.msg) if node.msg else ast.Constant(None)
        model = ast.Name(MODEL_NAME, ast.Load())
        text = ast.Constant(ast.unparse(node.test))
        call = ast.Call(
            func=ast.Name("_course_zoo_claim", ast.Load()),
            args=[model, text, ast.Lambda(no_args, node.test), message],
            keywords=[],
        )
        return ast.fix_missing_locations(ast.copy_location(ast.Expr(call), node))


def zoo_claims(model: str) -> bool:
    """Whether the lesson's claims are checked on ``model``: on a zoo model, yes (every assert stands,
    also after an earlier model off the zoo in the same kernel); on any other, from the next cell on
    each assert that fails prints one line instead of raising."""
    name = str(model)
    try:
        shell = get_ipython()  # noqa: F821 (IPython's own global)
    except NameError:  # plain Python: nothing to rewrite
        return name in ZOO
    others = [t for t in shell.ast_transformers if not isinstance(t, ClaimsOffTheZoo)]
    if name in ZOO:
        shell.ast_transformers[:] = others  # asserts are asserts again
        return True
    shell.user_ns.update({"_course_zoo_claim": _report, MODEL_NAME: name})
    shell.ast_transformers[:] = [*others, ClaimsOffTheZoo()]
    print(
        f"{name} is not a zoo model: this lesson's claims are facts about the zoo model it was written on, so "
        "each one that does not hold here prints a line below instead of stopping the lesson; the exercise "
        "checks and all the code run as usual"
    )
    return False
