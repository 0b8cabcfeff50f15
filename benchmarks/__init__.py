"""Benchmarks: scripts that print figures (never tests with timing assertions).

``generate.py`` builds a large data set in bulk, ``storage.py`` measures the storage pages and
the inventory export on it; the figures are kept in ``RESULTS.md``.
"""
