"""The Mini Program's tests (tests/miniprogram/*.test.js) under node's own test runner, run by
pytest so that they run beside the Python tests instead of after them (`npm test` runs them
alone). Without node or `npm ci`'s packages they are skipped with one line locally, and fail
in CI (CI set)."""
import os
import re
import shutil
import subprocess

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e   # real run_server.py / run_simulator.py processes, started by node


def unavailable(reason):
    if os.environ.get("CI"):
        pytest.fail("the Mini Program's tests cannot run in CI: " + reason)
    pytest.skip(reason)


def test_the_mini_programs_tests_pass_under_nodes_test_runner():
    node = shutil.which("node")
    if node is None:
        unavailable("no node on PATH (node 18 or later)")
    if not os.path.isdir(os.path.join(ROOT, "node_modules", "miniprogram-simulate")):
        unavailable("node_modules lacks miniprogram-simulate: run `npm ci`")
    with open(os.path.join(ROOT, "package.json"), encoding="utf-8") as f:
        assert '"test": "node --test tests/miniprogram/"' in f.read(), "npm test and this test run the same"
    done = subprocess.run([node, "--test", "tests/miniprogram/"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)   # a hang guard, not a timing check
    report = done.stdout[-8000:] + done.stderr[-4000:]
    assert done.returncode == 0, report
    counts = dict(re.findall(r"^# (pass|fail|cancelled|skipped|todo) (\d+)$", done.stdout, re.M))
    assert int(counts.get("pass", 0)) > 0, "node ran no test:\n" + report
    assert (counts.get("fail"), counts.get("cancelled"), counts.get("skipped")) == ("0", "0", "0"), report
