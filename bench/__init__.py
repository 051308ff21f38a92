"""The benchmark suite (issue 5): see bench/run.py."""
