#!/usr/bin/env python3
"""The benchmark suite of issue 5: one command, every measurement, a table and JSON.

    .venv/bin/python bench/run.py [--quick] [--out bench/results.json]

Starts what it needs (the simulator, which also counts upstream connections, the backend on a temporary
SQLite database, and bench/minimal_server.py as the baseline), runs every phase, prints a
table (measurement, figure, goal, PASS/FAIL) and writes the figures as JSON.

Load: wrk when it is on PATH (the minimal baseline, token, one-call and notify phases),
otherwise bench/loadgen.py (raw asyncio HTTP/1.1 keep-alive); both run in their own
process. The other phases always use bench/loadgen.py: the simulator row (it needs one
freshly signed unifiedorder per request and compares against a minimal-handler run by the
same generator), the 500-order burst, the memory run, fetching login codes and the
simulator-delivered notifications. CPU is each server process's own utime+stime (/proc/<pid>/stat),
read before and after a phase; memory is VmRSS (/proc/<pid>/status).

Issue 14's phases (README "Scaling out: PostgreSQL, processes, uvloop"):
- pg: the token phase's load at the SQLite backend and at a second backend on a throwaway,
  durable PostgreSQL (tests/support/postgres.py), alternated; backend CPU per order of
  each, and the PostgreSQL server's own CPU per order (its processes), reported apart;
- scale: saturated token-flow load (bench/loadgen.py) at run_server.py on PostgreSQL with
  one process and with --processes 2, alternated; orders/s and the cores used by each
  serving process, the simulator, PostgreSQL, the load generator and the rest of the machine;
- uvloop: the minimal server and the backend (on SQLite, and on PostgreSQL when it can run
  here), each on asyncio and on uvloop, alternated.
Without PostgreSQL server binaries pg, scale and uvloop's PostgreSQL part say so in one line
and are skipped; --quick leaves all three phases out unless --only names them.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import wrkdriver  # noqa: E402
from bench.common import ROOT, BenchError  # noqa: E402
from bench.phases import burst, cpu, scale  # noqa: E402
from bench.report import print_table, rows  # noqa: E402
from bench.rig import Bench, module_version, progress  # noqa: E402
from bench.servers import PG_SCHEMA  # noqa: E402

PROFILES = {
    # users: logged-in users whose tokens the token-flow phases rotate through
    # pg_rounds, uvloop_rounds: rounds of each configuration, alternated (ABBA...)
    # scale_s: one saturated run's length (CPU read in its steady middle), scale_rounds of each
    "full": dict(users=200, concurrency=50, warmup=1000, minimal=20000, minimal_s=10,
                 token=8000, token_s=15, onecall=4000, notify=4000, simpay=1000, burst=500,
                 burst_reps=3, wechatpy=500, memory=100000, memory_chunk=5000,
                 pg_rounds=3, scale_rounds=3, scale_s=10, scale_concurrency=100, uvloop_rounds=3),
    "quick": dict(users=20, concurrency=50, warmup=200, minimal=2000, minimal_s=2,
                  token=600, token_s=2, onecall=300, notify=300, simpay=100, burst=100,
                  burst_reps=1, wechatpy=64, memory=2000, memory_chunk=500,
                  pg_rounds=2, scale_rounds=2, scale_s=3, scale_concurrency=20, uvloop_rounds=2),
}
# the phases in the order they run; the minimal baseline always runs first (every ratio needs it)
STEPS = {"minimal": cpu.phase_minimal, "token": cpu.phase_token, "simdirect": cpu.phase_simdirect,
         "onecall": cpu.phase_onecall, "notify": cpu.phase_notify, "simpay": cpu.phase_simpay,
         "burst": burst.phase_burst, "wechatpy": burst.phase_wechatpy, "pg": scale.phase_pg,
         "scale": scale.phase_scale, "uvloop": scale.phase_uvloop, "memory": burst.phase_memory}
PHASES = tuple(STEPS)
# not in --quick unless named with --only (then with the quick counts): pg and scale start a
# PostgreSQL server, uvloop two more servers, and alternate rounds; together they would more
# than double the smoke test's time (tests/test_bench_smoke.py runs --quick)
QUICK_SKIPS = ("pg", "scale", "uvloop")


def counts(args):
    """The profile's counts, with --memory-orders and each --set applied."""
    p = dict(PROFILES["quick" if args.quick else "full"])
    if args.memory_orders:
        p["memory"] = args.memory_orders
    for item in args.set or ():
        key, _, value = item.partition("=")
        if key not in p or not value.isdigit():
            raise BenchError("--set %s: expected one of %s = an integer" % (item, ", ".join(p)))
        p[key] = int(value)
    return p


def chosen(args):
    """The phases --only names, or every phase (--quick: but QUICK_SKIPS)."""
    if args.only:
        only = set(args.only.split(","))
        unknown = only - set(PHASES)
        if unknown:
            raise BenchError("--only: no phase %s (phases: %s)" % (", ".join(sorted(unknown)), ", ".join(PHASES)))
        return only
    return set(PHASES) - (set(QUICK_SKIPS) if args.quick else set())


def run(bench):
    bench.start()
    bench.login_users()
    bench.warmup()
    cpu.phase_minimal(bench)           # every ratio needs the baseline
    if bench.args.quick and not bench.args.only:
        progress("%s: not in --quick (more servers, a PostgreSQL server, alternated rounds); "
                 "--quick --only %s runs them small" % (", ".join(QUICK_SKIPS), ",".join(QUICK_SKIPS)))
    for name in PHASES[1:]:
        if name in bench.only:
            STEPS[name](bench)
            bench.check_alive()


def meta(bench):
    return {"profile": "quick" if bench.args.quick else "full", "counts": bench.p,
            "loadgen": (wrkdriver.wrk_version() if bench.use_wrk else "bench/loadgen.py (asyncio)"),
            "loadgen_note": ("wrk drives the minimal, token, one-call and notify phases and the "
                             "token-flow and minimal loads of pg and uvloop; "
                             "bench/loadgen.py the simulator row (with its own minimal baseline), "
                             "burst, memory, scale, code-fetching and /sim/pay phases"
                             if bench.use_wrk else "bench/loadgen.py drives every phase"),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "clk_tck": os.sysconf("SC_CLK_TCK"),
            "tornado": __import__("tornado").version,
            "database": "temporary SQLite file in %s" % bench.workdir,
            "postgresql": (bench.pg_version and
                           "PostgreSQL %s, throwaway (tests/support/postgres.py), fsync on, schema %s"
                           % (bench.pg_version, PG_SCHEMA)) or bench.pg_unavailable,
            "uvloop": module_version("uvloop"), "asyncpg": module_version("asyncpg"),
            "phases": [name for name in PHASES if name in bench.only or name == "minimal"],
            "backend": "run_server.py with its defaults (MD5, LOG_LEVEL unset = INFO), upstream via "
                       "straight to run_simulator.py (time scale 1), which counts connections (/sim/stats)",
            "cpu_accounting": "utime+stime from /proc/<pid>/stat (all threads), before/after each phase; "
                              "run_server.py --processes N: the sum over its children; the PostgreSQL "
                              "server: the postmaster, its children and the children it reaped (cutime)",
            "git_head": git_head(),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}


def git_head():
    """The commit the bench ran on (read-only; None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def parse_args(argv):
    p = argparse.ArgumentParser(description="wxpay-tornado benchmark suite (issue 5)")
    p.add_argument("--quick", action="store_true", help="small counts (the smoke test)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"), help="JSON output file")
    p.add_argument("--loadgen", choices=["auto", "wrk", "asyncio"], default="auto",
                   help="auto: wrk when on PATH, else the bundled asyncio generator")
    p.add_argument("--only", help="comma-separated phases to run after the baseline: " + ",".join(PHASES[1:])
                   + " (--quick leaves out %s unless named here)" % ",".join(QUICK_SKIPS))
    p.add_argument("--memory-orders", type=int, help="orders in the memory phase (default 100000; quick 2000)")
    p.add_argument("--set", action="append", metavar="KEY=N",
                   help="override one count of the profile, e.g. --set notify=20000 --set token_s=60")
    p.add_argument("--workdir", help="where the database and logs go (default: a new temp dir, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (database, logs)")
    p.add_argument("--profile-backend", metavar="FILE",
                   help="run the backend under cProfile (main thread), stats written to FILE at the end")
    p.add_argument("--strict", action="store_true", help="exit 3 when a goal is not met")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench = Bench(args, counts(args), chosen(args))
    except BenchError as exc:
        print("bench: error: %s" % exc, file=sys.stderr)
        return 2
    ok = False
    try:
        run(bench)
        ok = True
    except BenchError as exc:
        print("bench: error: %s" % exc, file=sys.stderr)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
    except Exception:   # a bench bug: still stop the children and write what was measured
        import traceback
        traceback.print_exc()
        print("bench: error: unexpected exception (above)", file=sys.stderr)
    finally:
        bench.stop()
    return finish(bench, ok)


def finish(bench, ok):
    """The table, the notes and the JSON of what was measured; the exit code."""
    args = bench.args
    table = rows(bench)
    result = {"bench": "wxpay-tornado issue 5", "complete": ok, "meta": meta(bench), "rows": table,
              "phases": bench.phases, "notes": bench.notes}
    if bench.figures:
        print_table(table, bench)
    for note in bench.notes:
        print("note: " + note)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    print("figures written to %s" % args.out, flush=True)
    if ok and not args.keep and not args.workdir:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    elif not ok:
        print("bench: logs and database kept in %s" % bench.workdir, file=sys.stderr)
    if not ok:
        return 1
    if args.strict and any(r["pass"] is False for r in table):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
