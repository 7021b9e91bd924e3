"""Benchmarks: run by hand, print their figures (see each module's docstring)."""
