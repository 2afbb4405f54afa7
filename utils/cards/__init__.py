"""Model and SAE cards: every number the zoo publishes, measured with ``utils.metrics`` on
held-out data and written beside the weights (``model_cards``, ``sae_cards``).

Imports ``metrics``, ``model_zoo``, ``corpora`` and the base modules; only the course's machinery imports it.
"""
