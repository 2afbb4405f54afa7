"""Interventions on a running model: steering hooks and generation (``steering``), activation
patching sweeps (``sweeps``).

Imports ``utils.corpora`` and the base modules only; the models come in as arguments.
"""
