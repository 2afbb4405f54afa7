"""Hands-On Mechanistic Interpretability: the course's shared package."""
