"""WeChat Mini Program payment backend (Tornado); __version__ is the repository's VERSION file (the simulator's too)."""
import os


def _version():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "VERSION"),
              encoding="utf-8") as f:
        return f.read().strip()


__version__ = _version()
