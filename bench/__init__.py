"""Benchmarks: the seed-faithful baseline and the side-by-side step timing (``python -m bench``)."""
