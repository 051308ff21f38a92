"""The tests' shared helpers: demo credentials, paths, the fake clock (this package), the
backend's API (api.py), real processes (processes.py), a whole shop of processes (shop.py),
the simulator's side (sim.py)."""
import json
import os
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/
# A copy of ../shared/spec/vectors.json, so a clone without shared/ still tests;
# tests/test_repo.py checks that the copy equals the spec when the spec is beside the repo.
VECTORS_FILE = os.path.join(HERE, "data", "vectors.json")
SPEC_VECTORS_FILE = os.path.join(HERE, "..", "..", "shared", "spec", "vectors.json")

# the demo app and merchant, written once: simulator/demo.json
with open(os.path.join(HERE, "..", "simulator", "demo.json"), encoding="utf-8") as _f:
    DEMO = json.load(_f)


ADMIN_TOKEN = "test-admin-token-0123456789"


def load_vectors():
    with open(VECTORS_FILE, encoding="utf-8") as f:
        return json.load(f)


class FakeClock:
    """The backend's clock in integration tests: real time plus an offset tests can move."""

    def __init__(self):
        self._time = time.time
        self.offset = 0.0

    def __call__(self):
        return self._time() + self.offset
