"""Benchmarks of geopath against NumPy/SciPy (netrep-style) and PyTorch (repsim-style) baselines.

Run a script with ``python -m benchmarks.bench_pairwise`` (or ``python benchmarks/bench_pairwise.py``)
from the project root; see ``benchmarks/README.md``.
"""
