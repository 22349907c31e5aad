"""Benchmarks and accuracy evaluation (run as `python -m bench.<name>`); not timed tests."""
