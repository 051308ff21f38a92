"""Run the payment backend (server/cli.py), with the bundled WeChat simulator for --simulator."""
import sys

from server import cli
from simulator import bundle   # the one place that sees both: server/ never imports simulator/

if __name__ == "__main__":
    sys.exit(cli.main(bundle=bundle))
