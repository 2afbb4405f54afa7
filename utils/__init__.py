"""Hands-On Mechanistic Interpretability: the course's shared package.

    from utils import load_model, storyworld
"""

from utils.models import ZooError, default_device, load_model, zoo

__all__ = ["load_model", "zoo", "default_device", "ZooError"]
