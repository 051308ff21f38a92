#!/usr/bin/env python3
"""Run the offline WeChat simulator: login, Pay v2 and API v3 (JSAPI, refunds included),
notifications and the /sim/ control plane; with --tls over HTTPS with a local CA and client
certificates (simulator/cli.py)."""
import sys

from simulator import cli

if __name__ == "__main__":
    sys.exit(cli.main())
