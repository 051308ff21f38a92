"""Shared fixtures: the spec's vectors and demo credentials."""
import json
import os

import pytest

SPEC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "spec")
VECTORS_FILE = os.environ.get("WXPAY_VECTORS", os.path.join(SPEC_DIR, "vectors.json"))

DEMO = {
    "appid": "wxd930ea5d5a258f4f",
    "app_secret": "8a2f3c4d5e6f70819a0b1c2d3e4f5061",
    "mch_id": "10000100",
    "api_key": "192006250b4c09247ec02edce69f6a2d",
}


def load_vectors():
    with open(VECTORS_FILE, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def vectors():
    return load_vectors()
