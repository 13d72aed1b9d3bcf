"""Benchmarks of the rater: ``python -m bench.run`` (``make bench``); see docs/benchmarks.md."""
