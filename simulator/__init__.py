"""Offline WeChat simulator: login, Pay v2 and v3, notifications, control plane; __version__ is the repository's VERSION file."""
import os


def _version():
    # read, not imported from server/: server/ and simulator/ never import each other
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "VERSION"),
              encoding="utf-8") as f:
        return f.read().strip()


__version__ = _version()
