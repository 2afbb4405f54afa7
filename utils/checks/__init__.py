"""Exercise checks, one module per lesson: ``from utils.checks.lesson01_induction_heads import check_induction_scores``.

``framework`` holds what every check shares (``CheckFailed``, ``call``, ``expect_*``); a lesson imports
``yours_or_reference`` from here (``from utils.checks import yours_or_reference``). Each
lesson's module defines only its own ``check_*`` functions, so names cannot collide across
lessons (a test keeps it so).

Imports ``metrics``, ``interventions``, ``model_zoo``, ``corpora``, ``pictures`` and the base
modules; only the course's machinery (and the lessons) import it.
"""

from utils.checks.framework import CheckFailed, yours_or_reference

__all__ = ["CheckFailed", "yours_or_reference"]
