"""Adapters that bring SEEM and the divergence verdict to other libraries' training loops.

Each adapter imports its library lazily: nothing here is needed by seem_ray's own training.
"""
