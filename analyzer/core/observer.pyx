# cython: language_level=3
"""Placeholder: the observer (being written)."""
