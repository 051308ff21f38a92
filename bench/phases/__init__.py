"""The bench's phases, grouped by what they measure; bench/run.py runs them in order."""
