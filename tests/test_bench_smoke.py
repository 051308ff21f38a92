"""Smoke run of the benchmark suite: `bench/run.py --quick` still runs end to end.

It checks that the bench starts its processes, runs every phase of the quick profile, prints
every row of the table with its goal and a PASS/FAIL mark, and writes valid JSON. It asserts
no timing and no goal: figures vary from machine to machine, and judging them is the bench's
job. Issue 14's phases (pg, scale, uvloop) are not in --quick (they start more servers,
PostgreSQL among them): their rows say "not run".
"""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e

# the quick profile made smaller still: every phase runs, with a few dozen requests each
SMALLER = [arg for kv in ("minimal=500", "minimal_s=1", "token=200", "token_s=1", "onecall=100", "notify=100",
                          "simpay=30", "burst=20", "wechatpy=16", "memory=300", "memory_chunk=150", "warmup=30")
           for arg in ("--set", kv)]
ROW_IDS = ["token_cpu_ratio", "onecall_cpu_ratio", "notify_cpu_ratio", "sim_cpu_ratio",
           "burst_wall", "new_conns_per_1000", "memory_rss", "wechatpy_speedup",
           "pg_cpu_ratio", "pg_total_cpu_ratio", "scale_ratio", "uvloop_minimal_ratio", "uvloop_backend_ratio",
           "uvloop_pg_backend_ratio"]
NOT_IN_QUICK = set(ROW_IDS[8:])


def test_bench_quick_runs_prints_every_row_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick", "--out", str(out),
         "--workdir", str(tmp_path / "work"), *SMALLER],
        cwd=ROOT, capture_output=True, text=True, timeout=300)   # a hang guard, not a timing check
    report = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, report
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["complete"] is True, report
    assert [row["id"] for row in data["rows"]] == ROW_IDS
    table = proc.stdout[proc.stdout.index("measurement"):]
    for row in data["rows"]:
        line = next((l for l in table.splitlines() if l.startswith(row["measurement"])), None)
        assert line is not None, "row %s not printed:\n%s" % (row["id"], table)
        if row["id"] in NOT_IN_QUICK:
            assert row["figure"] is None and row["pass"] is None and "not run" in line, line
            continue
        assert isinstance(row["figure"], (int, float)) and math.isfinite(row["figure"]), row
        assert isinstance(row["pass"], bool), row
        assert row["goal"] in line and line.rstrip().endswith("PASS" if row["pass"] else "FAIL"), line
    assert data["meta"]["profile"] == "quick" and data["meta"]["loadgen"]
    assert not {"pg", "scale", "uvloop"} & set(data["phases"])
    assert "[bench" in proc.stdout     # progress lines while it runs
