"""Hands-On Mechanistic Interpretability: the course's shared package.

    from utils import load_model, plotting, seeds, storyworld
    model = load_model("storyworld-4l")

The front door: ``load_model``, ``zoo``, ``zoo_claims``, and the modules a lesson uses by name
(``storyworld``, ``plotting``, ``steering``, ...), wherever they live below. The packages, from
the bottom layer up (each imports only from the layers under it; ``tests/test_imports.py`` checks):

- ``paths``, ``seeds``: where everything lives, every held-out seed;
- ``corpora``: Storyworld, the countdown traces, their tokenizers, labelled prompt sets;
  ``pictures``: plots, dashboards, diagrams;
- ``model_zoo``: the registry, loading and training models and SAEs;
- ``interventions``: steering hooks, generation, patching sweeps;
- ``metrics``: measurements as plain functions;
- ``checks``: the exercises' checks; ``cards``: the model and SAE cards;
- ``course``: the course's machinery (first cell, notebooks, ``make course``, records, pages).

Importing ``utils`` itself is cheap; a module is imported when first asked for.
"""

import importlib

# The modules a lesson imports from the front door (``from utils import storyworld``), and where each lives.
MODULES = {
    "storyworld": "utils.corpora.storyworld",
    "countdown": "utils.corpora.countdown",
    "beliefs": "utils.corpora.beliefs",
    "tokenizer": "utils.corpora.tokenizer",
    "emotions": "utils.corpora.emotions",
    "registry": "utils.model_zoo.registry",
    "models": "utils.model_zoo.models",
    "saes": "utils.model_zoo.saes",
    "steering": "utils.interventions.steering",
    "sweeps": "utils.interventions.sweeps",
    "planted": "utils.metrics.planted",
    "plotting": "utils.pictures.plotting",
    "dashboards": "utils.pictures.dashboards",
}


def __getattr__(name: str):
    if name in MODULES:
        return importlib.import_module(MODULES[name])
    raise AttributeError(f"module 'utils' has no attribute {name!r}")


def load_model(name: str, device: str | None = None, **kwargs):
    """A TransformerBridge for a zoo model (offline) or a hub model; see ``utils.model_zoo.models``."""
    from utils.model_zoo.models import load_model as _load_model

    return _load_model(name, device, **kwargs)


def zoo() -> list[str]:
    """Names of the zoo models present in ``data/models``."""
    from utils.model_zoo.models import zoo as _zoo

    return _zoo()


def zoo_claims(model: str) -> bool:
    """Whether a lesson's asserts stand on ``model`` (a zoo model); off the zoo each failing claim
    prints one line instead of stopping the lesson. See ``utils.model_zoo.claims``."""
    from utils.model_zoo.claims import zoo_claims as _zoo_claims

    return _zoo_claims(model)


__all__ = ["load_model", "zoo", "zoo_claims", *MODULES]
