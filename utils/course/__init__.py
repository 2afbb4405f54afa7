"""The course's machinery: the notebooks' first cell (``notebook_setup``), the version policy,
exercise-notebook build and the one executor (``notebooks``), ``make course`` (``runner``),
recorded measurements, the robustness sweep, the start page, handouts, agendas, figures, bundles.

The top layer: it may import every other package of ``utils``, and none of them imports it.
"""
