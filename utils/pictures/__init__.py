"""Pictures: offline plots with static fallbacks (``plotting``), SAE feature dashboards
(``dashboards``) and the lessons' mechanism diagrams (``diagrams``).

Imports nothing else from ``utils``: any layer may draw.
"""
