"""Corpora: Storyworld and the countdown traces, their tokenizers, and the labelled prompt sets
built from them (emotions, transfer prompts and patching pairs).

Imports only ``utils.paths`` and ``utils.seeds``: no model, no measurement.
"""
