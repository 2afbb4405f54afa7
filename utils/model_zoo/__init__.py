"""The model zoo: which models, SAEs and transcoders exist (``registry``), loading them (``models``,
``saes``, ``transcoders``, ``nnsight_model``), training them (``train``, ``packing``) and ``zoo_claims``.

Imports ``utils.corpora`` and the base modules, never ``metrics``, ``cards`` or the course's machinery.
"""
