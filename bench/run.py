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
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402  (in requirements.txt)

from bench import report, wrkdriver  # noqa: E402
from bench.common import (DEMO, ROOT, BenchError, Child, children_of, cpu_seconds,  # noqa: E402
                          free_port, machine_cpu_seconds, notification_xml, order_request,
                          pay_sign_params, python_argv, raw_request, sign_md5, to_xml,
                          tree_cpu_seconds)

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
LATENCY_MS = 250
WECHATPY_THREADS = 16
PHASES = ("minimal", "token", "simdirect", "onecall", "notify", "simpay", "burst", "wechatpy", "pg", "scale",
          "uvloop", "memory")
# not in --quick unless named with --only (then with the quick counts): pg and scale start a
# PostgreSQL server, uvloop two more servers, and alternate rounds; together they would more
# than double the smoke test's time (tests/test_bench_smoke.py runs --quick)
QUICK_SKIPS = ("pg", "scale", "uvloop")
PG_SCHEMA = "bench"

MEMORY_FLAT_TOLERANCE = 0.05   # RSS may grow at most 5% from 50% to 100% of the run

T0 = time.monotonic()


def progress(msg):
    print("[bench %6.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


class Target:
    """A server the pg, scale and uvloop phases drive: its Child, port, work counter
    (count() -> orders created, or requests handled) and the tokens to order with.
    With processes > 1 (run_server.py --processes N) its CPU is that of the serving
    processes, the supervisor's children (/proc/<pid>/task/<pid>/children)."""

    def __init__(self, name, child, port, count, processes=1):
        self.name, self.child, self.port, self.count, self.processes = name, child, port, count, processes
        self.tokens = None

    def workers(self):
        """{pid: utime+stime seconds} of each serving process."""
        pids = [self.child.pid] if self.processes == 1 else children_of(self.child.pid)
        out = {}
        for pid in pids:
            try:
                out[pid] = cpu_seconds(pid)
            except OSError:
                pass    # ended meanwhile (the supervisor starts another; saturate() notes it)
        return out

    def cpu(self):
        return sum(self.workers().values())


def spread(values):
    """Median and range of a configuration's figures over its rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": list(values)}


def scale_window(seconds):
    """(settle, tail, span) of a saturated run: CPU is read from `settle` s after the load
    generator starts to `tail` s before its end, a window of `span` s."""
    settle, tail = min(2.0, 0.25 * seconds), min(1.0, 0.1 * seconds)
    return settle, tail, seconds - settle - tail


def event_loop_of(pid):
    """'uvloop' when the process has uvloop's event loop loaded (/proc/<pid>/maps), else 'asyncio'."""
    with open("/proc/%d/maps" % pid) as f:
        return "uvloop" if any("/uvloop/loop." in line for line in f) else "asyncio"


def module_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


class Bench:
    def __init__(self, args):
        self.args = args
        self.p = dict(PROFILES["quick" if args.quick else "full"])
        if args.memory_orders:
            self.p["memory"] = args.memory_orders
        for item in args.set or ():
            key, _, value = item.partition("=")
            if key not in self.p or not value.isdigit():
                raise BenchError("--set %s: expected one of %s = an integer" % (item, ", ".join(self.p)))
            self.p[key] = int(value)
        if args.only:
            self.only = set(args.only.split(","))
            unknown = self.only - set(PHASES)
            if unknown:
                raise BenchError("--only: no phase %s (phases: %s)" % (", ".join(sorted(unknown)), ", ".join(PHASES)))
        else:
            self.only = set(PHASES) - (set(QUICK_SKIPS) if args.quick else set())
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="wxpay-bench-")
        os.makedirs(self.workdir, exist_ok=True)
        self.children = []
        self.pg = None               # the throwaway PostgreSQL server, started by the first phase needing it
        self.pg_unavailable = None   # or why it cannot start
        self.targets = {}            # the servers started for the pg, scale and uvloop phases
        self.pg_tokens = None        # sessions at the PostgreSQL backends (one schema: valid at all)
        self.phases = {}
        self.figures = {}
        self.notes = []
        wrk_ok = wrkdriver.wrk_path() is not None
        self.use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and wrk_ok)
        if self.use_wrk and not wrk_ok:
            raise BenchError("--loadgen wrk, but wrk is not on PATH")
        self.http = requests.Session()

    # -- processes ---------------------------------------------------------------------
    def start(self):
        self.sim_port = free_port()
        self.backend_port, self.minimal_port = free_port(), free_port()
        log = lambda name: os.path.join(self.workdir, name + ".log")  # noqa: E731
        progress("starting the simulator, the backend and the minimal server"
                 " (logs in %s)" % self.workdir)
        self.sim = self._child("simulator", python_argv("run_simulator.py", "--port", self.sim_port),
                               log("simulator"), port=self.sim_port)
        self.db_path = os.path.join(self.workdir, "bench.db")
        argv = python_argv("run_server.py", "--port", self.backend_port,
                           "--database-url", "sqlite:///" + self.db_path)
        if self.args.profile_backend:
            argv = [sys.executable, "-m", "cProfile", "-o", os.path.abspath(self.args.profile_backend)] + argv[1:]
        self.backend = self._child("backend", argv, log("backend"), env=self.backend_env(self.backend_port),
                                   port=self.backend_port)
        self.minimal = self._child("minimal", python_argv("bench/minimal_server.py", "--port", self.minimal_port),
                                   log("minimal"), port=self.minimal_port)
        progress("pids: simulator %d, backend %d, minimal %d"
                 % (self.sim.pid, self.backend.pid, self.minimal.pid))
        r = self.http.get("http://127.0.0.1:%d/healthz" % self.backend_port, timeout=10)
        if r.status_code != 200:
            raise BenchError("backend /healthz answered %d: %s\n%s" % (r.status_code, r.text, self.backend.output()))

    def backend_env(self, port):
        upstream = "http://127.0.0.1:%d" % self.sim_port  # connections counted by the simulator
        return {"WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"],
                "WECHAT_MCH_ID": DEMO["mch_id"], "WECHAT_API_KEY": DEMO["api_key"],
                "WECHAT_NOTIFY_URL": "http://127.0.0.1:%d/wechat/pay/notify" % port,
                "WECHAT_LOGIN_BASE_URL": upstream, "WECHAT_PAY_BASE_URL": upstream,
                # everything else at the backend's defaults, whatever the caller's shell says
                "WECHAT_SIGN_TYPE": None, "WECHAT_TIMEOUT": None, "DATABASE_URL": None,
                "CATALOG_FILE": None, "SESSION_TTL": None, "SPBILL_CREATE_IP": None,
                "LOG_LEVEL": None, "WECHAT_CERT_FILE": None, "WECHAT_KEY_FILE": None,
                "WECHAT_CA_FILE": None, "WECHAT_REFUND_NOTIFY_URL": None, "ADMIN_TOKEN": None,
                "WECHAT_PROXY": None, "WECHAT_CONNECTIONS_PER_HOST": None, "DATABASE_POOL_SIZE": None,
                "DATABASE_TIMEOUT": None, "SWEEP_INTERVAL": None, "HEADER_TIMEOUT": None,
                "BODY_TIMEOUT": None, "IDLE_TIMEOUT": None, "MAX_CONNECTIONS": None, "SEND_TIMEOUT": None,
                "EVENT_LOOP": None, "ACCESS_LOG": None, "TRUST_PROXY_HEADERS": None}

    def _child(self, name, argv, log_path, env=None, port=None):
        child = Child(name, argv, log_path, env=env, port=port)
        self.children.append(child)
        return child

    def stop(self):
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                print("bench: could not stop %s (pid %d): %s" % (child.name, child.pid, exc), file=sys.stderr)
        if self.pg is not None:
            try:
                self.pg.stop()
            except Exception as exc:
                print("bench: could not stop the PostgreSQL server: %s" % exc, file=sys.stderr)

    def check_alive(self):
        for child in self.children:
            child.check_alive()

    # -- helpers -----------------------------------------------------------------------
    @property
    def sim_url(self):
        return "http://127.0.0.1:%d" % self.sim_port

    @property
    def backend_url(self):
        return "http://127.0.0.1:%d" % self.backend_port

    def upstream_stats(self):
        """The simulator's transport counters: connections it accepted, WeChat calls it served."""
        stats = self.http.get(self.sim_url + "/sim/stats", timeout=5).json()
        return {"accepted": stats["connections_accepted"], "requests": stats["wechat_requests"]}

    def db(self, sql, args=()):
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def orders_done(self):
        return self.db("SELECT COUNT(*) FROM orders WHERE prepay_id IS NOT NULL")[0][0]

    def paid_count(self):
        return self.db("SELECT COUNT(*) FROM orders WHERE status = 'SUCCESS'")[0][0]

    def minimal_count(self):
        return self.http.get("http://127.0.0.1:%d/count" % self.minimal_port, timeout=5).json()["count"]

    def loadgen(self, port, reqs, count=None, concurrency=None, mode="closed", duration=None,
                save_bodies=False, timeout=None):
        """bench/loadgen.py in its own process; its JSON result."""
        spec = {"port": port, "requests": [r.decode("latin-1") for r in reqs], "mode": mode,
                "concurrency": concurrency or self.p["concurrency"], "save_bodies": save_bodies,
                "timeout": 30.0}
        if count is not None:
            spec["count"] = count
        if duration is not None:
            spec["duration"] = duration
        path = os.path.join(self.workdir, "loadgen-spec.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        n = count or len(reqs)
        limit = timeout or (60 + n / 20.0)
        try:
            out = subprocess.run(python_argv("bench/loadgen.py", path), capture_output=True,
                                 text=True, timeout=limit, cwd=ROOT)
        except subprocess.TimeoutExpired:
            raise BenchError("load generator did not finish within %.0f s" % limit) from None
        if out.returncode != 0:
            raise BenchError("load generator failed (exit %d):\n%s" % (out.returncode, out.stderr[-3000:]))
        return json.loads(out.stdout)

    def drive(self, port, reqs, mode, count, duration, counter=None):
        """A CPU phase's load: wrk when used, else loadgen. mode rotate|once.

        counter(): the server-side count of work done; with wrk in `once` mode the run ends
        when it reaches len(reqs) (or stops moving for 2 s: wrk may drop a request at the
        very end when a thread stops)."""
        if self.use_wrk:
            cap = duration if mode == "rotate" else max(60, int(len(reqs) / 20))
            until = done_when(counter, len(reqs)) if mode == "once" else None
            res = wrkdriver.run(port, reqs, mode, self.p["concurrency"], cap, 30,
                                workdir=self.workdir, until=until)
            if until is not None and until.progress[1] > 0:
                # wrk's own duration includes the wait for the end; the server-side rate is truer
                res["rps"] = until.progress[0] / until.progress[1]
                res["rps_note"] = "server-side count / time to the last completed item"
            return res
        if mode == "rotate":
            return self.loadgen(port, reqs, count=count)
        return self.loadgen(port, reqs)

    def measure(self, procs, fn):
        """Run fn(); return (its result, {name: cpu seconds of that process during fn}).

        For the backend also self.last_threads: its CPU split between the main thread (the
        IOLoop) and the other threads (the SQLite executor thread)."""
        threads0 = self.backend.thread_cpu() if self.backend in procs else None
        before = {c.name: c.cpu() for c in procs}
        result = fn()
        time.sleep(0.3)   # let work still in flight (wrk's cut-off requests) finish
        cpu = {c.name: c.cpu() - before[c.name] for c in procs}
        if threads0 is not None:
            threads1 = self.backend.thread_cpu()
            pid = self.backend.pid
            main = threads1.get(pid, 0.0) - threads0.get(pid, 0.0)
            other = sum(v - threads0.get(t, 0.0) for t, v in threads1.items() if t != pid)
            self.last_threads = {"main_thread_s": main, "other_threads_s": other,
                                 "main_thread_share": main / (main + other) if main + other else None}
        return result, cpu

    def check_load(self, name, res, expected_ok=None):
        errors = res.get("errors", 0)
        bad = res["completed"] - res["ok"] - res.get("overshoot_404", 0)
        if errors or bad > max(2, 0.01 * res["completed"]):
            self.notes.append("%s: %d transport errors, %d non-2xx answers of %d (%s)"
                              % (name, errors, bad, res["completed"], res.get("status") or res.get("error_samples")))
            progress("WARNING %s" % self.notes[-1])

    # -- preparation -------------------------------------------------------------------
    def login_users(self):
        progress("logging in %d users (wx.login at the simulator, POST /api/login): not measured" % self.p["users"])
        self.tokens, self.openids = self.login(self.backend_port)

    def login(self, port):
        """The bench users logged in at the backend on `port`: (tokens, openids)."""
        tokens, openids = [], []
        for i in range(self.p["users"]):
            r = self.http.post(self.sim_url + "/sim/login", json={"appid": DEMO["appid"], "user": "bench-%d" % i}, timeout=10)
            r.raise_for_status()
            openids.append(r.json()["openid"])
            r2 = self.http.post("http://127.0.0.1:%d/api/login" % port, json={"code": r.json()["code"]}, timeout=10)
            if r2.status_code != 200:
                raise BenchError("POST /api/login answered %d: %s" % (r2.status_code, r2.text))
            tokens.append(r2.json()["token"])
        return tokens, openids

    def token_requests(self, port):
        return [order_request(port, token=t) for t in self.tokens]

    def warmup(self):
        progress("warm-up: %d token-flow orders at concurrency %d (not measured)" % (self.p["warmup"], self.p["concurrency"]))
        res = self.loadgen(self.backend_port, self.token_requests(self.backend_port), count=self.p["warmup"])
        self.check_load("warmup", res)
        reqs = self.token_requests(self.minimal_port)
        self.loadgen(self.minimal_port, reqs, count=min(1000, self.p["minimal"]))

    # -- phases ------------------------------------------------------------------------
    def phase_minimal(self):
        p = self.p
        progress("baseline: minimal Tornado JSON handler, %s at concurrency %d (%s)"
                 % ("%d s" % p["minimal_s"] if self.use_wrk else "%d requests" % p["minimal"],
                    p["concurrency"], "wrk" if self.use_wrk else "asyncio loadgen"))
        reqs = self.token_requests(self.minimal_port)   # same headers and body as an order call
        before = self.minimal_count()
        res, cpu = self.measure([self.minimal], lambda: self.drive(self.minimal_port, reqs, "rotate", p["minimal"], p["minimal_s"]))
        handled = need(self.minimal_count() - before, "request handled", self.minimal)
        self.check_load("minimal", res)
        per = cpu["minimal"] / handled
        self.baseline = per
        self.phases["minimal"] = {"load": res, "cpu_s": cpu["minimal"], "requests_handled": handled,
                                  "cpu_us_per_request": per * 1e6}
        progress("  minimal handler: %d requests, %.0f req/s, %.1f us CPU per request"
                 % (handled, res["rps"], per * 1e6))

    def phase_token(self):
        p = self.p
        progress("token flow: POST /api/orders with a Bearer token, %s at concurrency %d"
                 % ("%d s" % p["token_s"] if self.use_wrk else "%d orders" % p["token"], p["concurrency"]))
        reqs = self.token_requests(self.backend_port)
        o0, s0 = self.orders_done(), self.upstream_stats()
        res, cpu = self.measure([self.backend, self.sim],
                                lambda: self.drive(self.backend_port, reqs, "rotate", p["token"], p["token_s"]))
        orders, s1 = need(self.orders_done() - o0, "order created", self.backend), self.upstream_stats()
        self.check_load("token", res)
        calls = need(s1["requests"] - s0["requests"], "upstream call", self.backend)
        conns = s1["accepted"] - s0["accepted"]
        self.phases["token"] = {
            "load": res, "orders_created": orders, "cpu_s": cpu,
            "backend_cpu_us_per_order": cpu["backend"] / orders * 1e6,
            "backend_threads": self.last_threads,
            "upstream_calls": calls, "new_upstream_connections": conns,
            "simulator_cpu_us_per_unifiedorder": cpu["simulator"] / calls * 1e6}
        self.figures["token_cpu_ratio"] = (cpu["backend"] / orders) / self.baseline
        self.phases["token"]["simulator_in_flow_ratio"] = (cpu["simulator"] / calls) / self.baseline
        self.figures["new_conns_per_1000"] = 1000.0 * conns / calls
        progress("  %d orders, %.0f orders/s, backend %.0f us CPU/order, simulator %.0f us CPU/call, "
                 "%d new upstream connections for %d calls"
                 % (orders, res["rps"], cpu["backend"] / orders * 1e6, cpu["simulator"] / calls * 1e6, conns, calls))

    def phase_simdirect(self):
        """The simulator row: its unifiedorder driven directly, at saturation.

        In the token phase the simulator only gets the backend's rate (a fraction of a core),
        so it does more loop wake-ups per call than the saturated minimal handler. Here both
        are driven by bench/loadgen.py at the same concurrency, as fast as they go, and the
        ratio compares like with like (the token phase's in-flow figure stays in the JSON)."""
        n = self.p["token"]
        prefix = "D" + secrets.token_hex(4)
        notify_url = "http://127.0.0.1:%d/wechat/pay/notify" % self.backend_port
        reqs = []
        for i in range(n):
            fields = {"appid": DEMO["appid"], "mch_id": DEMO["mch_id"], "nonce_str": secrets.token_hex(16),
                      "body": "Americano", "out_trade_no": "%s%08d" % (prefix, i), "total_fee": "1200",
                      "spbill_create_ip": "127.0.0.1", "notify_url": notify_url, "trade_type": "JSAPI",
                      "openid": self.openids[i % len(self.openids)]}
            fields["sign"] = sign_md5(fields, DEMO["api_key"])
            reqs.append(raw_request("POST", "/pay/unifiedorder", self.sim_port, to_xml(fields),
                                    content_type="text/xml"))
        progress("simulator: %d signed unifiedorder calls straight at the simulator, and "
                 "the minimal handler again, both with bench/loadgen.py at concurrency %d" % (n, self.p["concurrency"]))
        res, cpu = self.measure([self.sim], lambda: self.loadgen(self.sim_port, reqs))
        self.check_load("simdirect", res)
        mres, mcpu = self.measure([self.minimal], lambda: self.loadgen(
            self.minimal_port, self.token_requests(self.minimal_port), count=self.p["minimal"]))
        sim_per, min_per = cpu["simulator"] / need(res["ok"], "unifiedorder answered", self.sim), \
            mcpu["minimal"] / need(mres["ok"], "request answered", self.minimal)
        self.phases["simdirect"] = {
            "unifiedorder_load": res, "simulator_cpu_us_per_unifiedorder": sim_per * 1e6,
            "minimal_load": mres, "minimal_cpu_us_per_request": min_per * 1e6,
            "ratio": sim_per / min_per,
            "note": "the table's simulator row: both saturated, same generator and concurrency. "
                    "Under the backend's traffic (token phase, simulator_in_flow_ratio) the "
                    "simulator runs well below saturation and costs more per call"}
        self.figures["sim_cpu_ratio"] = sim_per / min_per
        progress("  simulator %.0f us CPU per unifiedorder at %.0f/s, minimal %.0f us at %.0f/s: %.2fx"
                 % (sim_per * 1e6, res["rps"], min_per * 1e6, mres["rps"], sim_per / min_per))

    def phase_onecall(self):
        p = self.p
        n = p["onecall"]
        progress("one-call flow: fetching %d single-use login codes from /sim/login (not measured)" % n)
        login_reqs = [raw_request("POST", "/sim/login", self.sim_port,
                                  json.dumps({"appid": DEMO["appid"], "user": "bench-%d" % i}),
                                  content_type="application/json") for i in range(p["users"])]
        got = self.loadgen(self.sim_port, login_reqs, count=n, save_bodies=True)
        codes = [json.loads(b)["code"] for b in got["bodies"] if b]
        if len(codes) != n:
            raise BenchError("got %d of %d login codes" % (len(codes), n))
        reqs = [order_request(self.backend_port, code=c) for c in codes]
        progress("one-call flow: %d POST /api/orders with the code in the body (jscode2session + "
                 "unifiedorder), concurrency %d" % (n, p["concurrency"]))
        o0, s0 = self.orders_done(), self.upstream_stats()
        res, cpu = self.measure([self.backend, self.sim], lambda: self.drive(self.backend_port, reqs, "once", n, None, self.orders_done))
        orders, s1 = need(self.orders_done() - o0, "order created", self.backend), self.upstream_stats()
        self.check_load("onecall", res)
        calls = s1["requests"] - s0["requests"]
        self.phases["onecall"] = {
            "load": res, "orders_created": orders, "cpu_s": cpu,
            "backend_cpu_us_per_order": cpu["backend"] / orders * 1e6,
            "backend_threads": self.last_threads,
            "upstream_calls": calls, "new_upstream_connections": s1["accepted"] - s0["accepted"],
            "simulator_cpu_us_per_order": cpu["simulator"] / orders * 1e6}
        self.figures["onecall_cpu_ratio"] = (cpu["backend"] / orders) / self.baseline
        progress("  %d orders, %.0f orders/s, backend %.0f us CPU/order, %d upstream calls, %d new connections"
                 % (orders, res["rps"], cpu["backend"] / orders * 1e6, calls, s1["accepted"] - s0["accepted"]))

    def unpaid_orders(self, n, exclude=()):
        rows = self.db("SELECT out_trade_no, openid, total_fee, prepay_id FROM orders WHERE status = 'NOTPAY'"
                       " AND prepay_id IS NOT NULL ORDER BY created_at DESC LIMIT ?", (n + len(exclude),))
        rows = [r for r in rows if r[0] not in exclude][:n]
        if len(rows) < n:
            raise BenchError("only %d unpaid orders to notify, %d needed" % (len(rows), n))
        return rows

    def phase_notify(self):
        n = self.p["notify"]
        rows = self.unpaid_orders(n)
        self.notified = {r[0] for r in rows}
        time_end = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).strftime("%Y%m%d%H%M%S")
        reqs = [raw_request("POST", "/wechat/pay/notify", self.backend_port,
                            notification_xml(no, openid, fee, "4200%024d" % i, time_end, secrets.token_hex(16)),
                            content_type="text/xml")
                for i, (no, openid, fee, _) in enumerate(rows)]
        progress("notifications: %d correctly signed payment notifications (MD5, one per unpaid order) "
                 "posted by the load generator to /wechat/pay/notify, concurrency %d" % (n, self.p["concurrency"]))
        p0 = self.paid_count()
        res, cpu = self.measure([self.backend], lambda: self.drive(self.backend_port, reqs, "once", n, None, self.paid_count))
        paid = need(self.paid_count() - p0, "notification applied", self.backend)
        self.check_load("notify", res)
        self.phases["notify"] = {
            "load": res, "notifications_applied": paid, "cpu_s": cpu["backend"],
            "backend_cpu_us_per_notification": cpu["backend"] / paid * 1e6,
            "backend_threads": self.last_threads,
            "method": "signed notification XML (as the simulator's notifier builds it) posted by the "
                      "load generator over keep-alive connections; only /wechat/pay/notify runs in the "
                      "window; count = orders moved NOTPAY->SUCCESS in the database"}
        self.figures["notify_cpu_ratio"] = (cpu["backend"] / paid) / self.baseline
        progress("  %d notifications applied, %.0f/s, backend %.0f us CPU per notification"
                 % (paid, res["rps"], cpu["backend"] / paid * 1e6))

    def phase_simpay(self):
        """Informational: notifications delivered by the simulator after /sim/pay."""
        n = self.p["simpay"]
        rows = self.unpaid_orders(n, exclude=getattr(self, "notified", ()))
        ts = int(time.time())
        reqs = [raw_request("POST", "/sim/pay", self.sim_port,
                            json.dumps(dict(pay_sign_params(prepay, ts, secrets.token_hex(16)), appid=DEMO["appid"])),
                            content_type="application/json") for (_, _, _, prepay) in rows]
        progress("notifications via the simulator (info): %d wx.requestPayment at /sim/pay, the simulator "
                 "delivers each notification on a new connection" % n)
        p0 = self.paid_count()
        before = self.backend.cpu()
        res = self.loadgen(self.sim_port, reqs, concurrency=16)
        deadline = time.monotonic() + 60 + n / 20.0
        while self.paid_count() - p0 < n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        cpu = self.backend.cpu() - before
        paid = self.paid_count() - p0
        self.check_load("simpay", res)
        self.phases["simpay"] = {"load": res, "notifications_applied": paid, "backend_cpu_s": cpu,
                                 "backend_cpu_us_per_notification": cpu / paid * 1e6 if paid else None,
                                 "ratio_to_minimal": (cpu / paid) / self.baseline if paid else None}
        progress("  %d of %d applied, backend %.0f us CPU per notification (%.2fx minimal)"
                 % (paid, n, cpu / max(paid, 1) * 1e6, (cpu / max(paid, 1)) / self.baseline))

    def set_latency(self):
        r = self.http.post(self.sim_url + "/sim/faults", timeout=10,
                           json={"path": "/pay/unifiedorder", "kind": "latency", "value": LATENCY_MS})
        if r.status_code != 201:
            raise BenchError("POST /sim/faults answered %d: %s" % (r.status_code, r.text))

    def clear_faults(self):
        self.http.delete(self.sim_url + "/sim/faults", timeout=10)

    def phase_burst(self):
        n, reps = self.p["burst"], self.p["burst_reps"]
        progress("burst: %d orders all in flight at once, %d ms injected unifiedorder latency, %d run(s)"
                 % (n, LATENCY_MS, reps))
        self.set_latency()
        try:
            tokens = self.tokens
            runs = []
            for rep in range(reps):
                reqs = [order_request(self.backend_port, token=tokens[i % len(tokens)]) for i in range(n)]
                s0, o0 = self.upstream_stats(), self.orders_done()
                before = self.backend.cpu()
                res = self.loadgen(self.backend_port, reqs, mode="burst", timeout=120)
                cpu = self.backend.cpu() - before
                s1 = self.upstream_stats()
                self.check_load("burst", res)
                runs.append({"wall_s": res["wall"], "ok": res["ok"], "status": res["status"],
                             "errors": res["errors"], "latency_ms": res["latency_ms"],
                             "orders_created": self.orders_done() - o0,
                             "new_upstream_connections": s1["accepted"] - s0["accepted"],
                             "backend_cpu_s": cpu})
                progress("  run %d: %.3f s wall, %d/%d answered 201, %d new upstream connections"
                         % (rep + 1, res["wall"], res["ok"], n, s1["accepted"] - s0["accepted"]))
            walls = [r["wall_s"] for r in runs]
            wall = statistics.median(walls)
            if any(r["ok"] != n for r in runs):
                self.notes.append("burst: not every order was answered 201: %s" % [r["status"] for r in runs])
            self.phases["burst"] = {"orders": n, "latency_ms": LATENCY_MS, "runs": runs,
                                    "wall_s_median": wall, "wall_s_all": walls,
                                    "note": "connections opened before the clock starts; wall = first "
                                            "send to last answer; the figure is the median run"}
            self.figures["burst_wall"] = wall
        finally:
            self.clear_faults()

    def phase_wechatpy(self):
        n = self.p["wechatpy"]
        progress("wechatpy comparison: %d x order.create (JSAPI) in a ThreadPoolExecutor(%d), %d ms latency"
                 % (n, WECHATPY_THREADS, LATENCY_MS))
        spec = {"sim_url": self.sim_url, "openids": self.openids, "count": n, "threads": WECHATPY_THREADS,
                "notify_url": "http://127.0.0.1:%d/wechat/pay/notify" % self.backend_port}
        path = os.path.join(self.workdir, "wechatpy-spec.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        self.set_latency()
        try:
            limit = 60 + n * LATENCY_MS / 1000.0
            out = subprocess.run(python_argv("bench/wechatpy_burst.py", path), capture_output=True,
                                 text=True, timeout=limit, cwd=ROOT)
        except subprocess.TimeoutExpired:
            raise BenchError("wechatpy burst did not finish within %.0f s" % limit) from None
        finally:
            self.clear_faults()
        if out.returncode != 0:
            raise BenchError("wechatpy burst failed:\n" + out.stderr[-3000:])
        res = json.loads(out.stdout)
        if res["errors"]:
            self.notes.append("wechatpy: %d errors: %s" % (res["errors"], res["error_samples"]))
        ours = self.phases.get("burst", {})
        self.phases["wechatpy"] = dict(res, note="straight at the simulator, like the backend; same latency fault")
        if ours and ours["orders"] == n:
            ours_wall = ours["wall_s_median"]
        else:
            # the quick profile or --only: measure ours at the same count
            self.phase_burst_count(n)
            ours_wall = self.phases["burst_same_count"]["wall_s"]
        self.figures["wechatpy_speedup"] = res["wall"] / ours_wall
        self.phases["wechatpy"]["ours_wall_s"] = ours_wall
        progress("  wechatpy: %.3f s wall for %d orders (%d ok) vs ours %.3f s: %.1fx"
                 % (res["wall"], n, res["ok"], ours_wall, res["wall"] / ours_wall))

    def phase_burst_count(self, n):
        self.set_latency()
        try:
            reqs = [order_request(self.backend_port, token=self.tokens[i % len(self.tokens)]) for i in range(n)]
            res = self.loadgen(self.backend_port, reqs, mode="burst", timeout=120)
        finally:
            self.clear_faults()
        self.phases["burst_same_count"] = {"orders": n, "wall_s": res["wall"], "ok": res["ok"]}

    def phase_memory(self):
        total, chunk = self.p["memory"], self.p["memory_chunk"]
        progress("memory: %d token-flow orders in chunks of %d, VmRSS sampled after each chunk" % (total, chunk))
        reqs = self.token_requests(self.backend_port)
        samples = [{"orders": 0, "rss_mb": self.backend.rss(), "elapsed_s": 0.0}]
        start, done, started_at = self.orders_done(), 0, time.monotonic()
        while done < total:
            n = min(chunk, total - done)
            res = self.loadgen(self.backend_port, reqs, count=n)
            self.check_load("memory", res)
            self.backend.check_alive()
            done = self.orders_done() - start
            samples.append({"orders": done, "rss_mb": self.backend.rss(),
                            "elapsed_s": time.monotonic() - started_at, "rps": res["rps"]})
            progress("  %6d / %d orders, RSS %.1f MB, %.0f orders/s" % (done, total, samples[-1]["rss_mb"], res["rps"]))
            if res["ok"] == 0:
                raise BenchError("memory phase: no order created in a chunk: %s" % res.get("status"))
        half = min(samples, key=lambda s: abs(s["orders"] - done / 2))
        final = samples[-1]["rss_mb"]
        growth = (final - half["rss_mb"]) / half["rss_mb"]
        second_half = [s for s in samples if s["orders"] >= half["orders"]]
        slope = ((second_half[-1]["rss_mb"] - second_half[0]["rss_mb"]) /
                 max(1, second_half[-1]["orders"] - second_half[0]["orders"]) * 10000)
        with open("/proc/%d/status" % self.backend.pid) as f:
            hwm = next((int(l.split()[1]) / 1024.0 for l in f if l.startswith("VmHWM:")), None)
        self.phases["memory"] = {"orders": done, "samples": samples, "rss_start_mb": samples[0]["rss_mb"],
                                 "rss_half_mb": half["rss_mb"], "rss_final_mb": final, "rss_peak_mb": hwm,
                                 "growth_second_half": growth, "slope_mb_per_10k_orders_second_half": slope,
                                 "flat_tolerance": MEMORY_FLAT_TOLERANCE,
                                 "orders_in_database": self.db("SELECT COUNT(*) FROM orders")[0][0]}
        self.figures["memory_rss"] = final
        self.memory_flat = growth <= MEMORY_FLAT_TOLERANCE
        progress("  RSS %.1f MB at 50%%, %.1f MB at 100%% (%+.1f%%), peak %.1f MB"
                 % (half["rss_mb"], final, 100 * growth, hwm or 0))

    # -- issue 14: PostgreSQL, several processes, uvloop -------------------------------
    def postgres(self, phase, record=True):
        """The throwaway PostgreSQL server (durable: fsync on), started once for the phases
        that need it; None, with one line saying why, when it cannot start here (and, with
        record, the phase noted as skipped in the JSON)."""
        if self.pg is None and self.pg_unavailable is None:
            try:
                from tests.support.postgres import PostgresServer, Unavailable
            except ImportError as exc:
                self.pg_unavailable = "cannot import tests/support/postgres.py: %s" % exc
            else:
                server = PostgresServer(durable=True)
                try:
                    self.pg = server.start()
                except Unavailable as exc:
                    server.stop()
                    self.pg_unavailable = str(exc)
                else:
                    self.pg_url = self.pg.create_schema(PG_SCHEMA)
                    with open(os.path.join(self.pg.folder, "data", "postmaster.pid")) as f:
                        self.postmaster = int(f.readline())
                    self.pg_version = self.pg.psql("SHOW server_version")
                    progress("started a throwaway PostgreSQL %s (fsync on) on port %d, postmaster pid %d"
                             % (self.pg_version, self.pg.port, self.postmaster))
        if self.pg is None:
            progress("%s: skipped: %s" % (phase, self.pg_unavailable))
            if record:
                self.phases[phase] = {"skipped": self.pg_unavailable}
            return None
        return self.pg

    def pg_cpu(self):
        """CPU of the PostgreSQL server: the postmaster, its children (a process per
        connection, the checkpointer, WAL writer, autovacuum...) and the children it reaped."""
        return tree_cpu_seconds(self.postmaster)

    def pg_orders(self):
        return int(self.pg.psql("SELECT COUNT(*) FROM %s.orders WHERE prepay_id IS NOT NULL" % PG_SCHEMA))

    def sqlite_target(self):
        if "backend" not in self.targets:
            target = Target("backend", self.backend, self.backend_port, self.orders_done)
            target.tokens = self.tokens
            self.targets["backend"] = target
        return self.targets["backend"]

    def minimal_target(self):
        if "minimal" not in self.targets:
            self.targets["minimal"] = Target("minimal", self.minimal, self.minimal_port,
                                             lambda: self.count_at(self.minimal_port))
        return self.targets["minimal"]

    def count_at(self, port):
        return self.http.get("http://127.0.0.1:%d/count" % port, timeout=5).json()["count"]

    def start_backend(self, name, database_url, *flags):
        port = free_port()
        argv = python_argv("run_server.py", "--port", port, "--database-url", database_url, *flags)
        child = self._child(name, argv, os.path.join(self.workdir, name + ".log"),
                            env=self.backend_env(port), port=port)
        deadline = time.monotonic() + 20
        while True:     # --processes N: the supervisor listens before its children serve
            try:
                r = self.http.get("http://127.0.0.1:%d/healthz" % port, timeout=10)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                r = None
            child.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("%s /healthz: %s\n%s" % (name, r and r.status_code, child.output()))
            time.sleep(0.1)
        return child, port

    def warm(self, target, concurrency=None):
        """Unmeasured orders (or requests) at a new server: imports, pools, caches."""
        if target.tokens is None:
            reqs, count = self.token_requests(target.port), min(1000, self.p["minimal"])
        else:
            reqs, count = [order_request(target.port, token=t) for t in target.tokens], self.p["warmup"]
        res = self.loadgen(target.port, reqs, count=count, concurrency=concurrency)
        self.check_load("warm-up " + target.name, res)

    def pg_target(self, processes, event_loop="asyncio"):
        """A backend on the PostgreSQL schema: one process, or run_server.py --processes N;
        on asyncio or uvloop. Every one uses the same schema (the same tables and sessions:
        the tokens of the first work at all of them); only one is loaded at a time."""
        name = "backend-pg" + ("-x%d" % processes if processes > 1 else "") + ("-uvloop" if event_loop == "uvloop" else "")
        if name not in self.targets:
            flags = (("--processes", processes) if processes > 1 else ()) + (
                ("--event-loop", event_loop) if event_loop != "asyncio" else ())
            progress("starting %s: run_server.py %son PostgreSQL" % (name, "".join("%s " % f for f in flags)))
            child, port = self.start_backend(name, self.pg_url, *flags)
            target = Target(name, child, port, self.pg_orders, processes)
            if processes > 1:
                deadline = time.monotonic() + 20
                while len(children_of(child.pid)) < processes:
                    child.check_alive()
                    if time.monotonic() > deadline:
                        raise BenchError("%s: %d processes, not %d" % (name, len(children_of(child.pid)), processes))
                    time.sleep(0.1)
            if self.pg_tokens is None:
                self.pg_tokens = self.login(port)[0]
            target.tokens = self.pg_tokens
            self.warm(target, concurrency=max(self.p["concurrency"], self.p["scale_concurrency"]))
            self.targets[name] = target
        return self.targets[name]

    def token_run(self, target, with_pg=False):
        """The token phase's load (same requests, counts, concurrency, generator) at one
        backend; CPU of the backend (its serving processes), the simulator and, with_pg,
        the PostgreSQL server."""
        p = self.p
        reqs = [order_request(target.port, token=t) for t in target.tokens]
        meters = {"backend": target.cpu, "simulator": self.sim.cpu}
        if with_pg:
            meters["postgres"] = self.pg_cpu
        o0, s0 = target.count(), self.upstream_stats()
        res, cpu, seconds = self.window(meters, lambda: self.drive(target.port, reqs, "rotate", p["token"], p["token_s"]))
        orders, s1 = need(target.count() - o0, "order created", target.child), self.upstream_stats()
        self.check_load(target.name, res)
        # above 1: other WeChat calls in the window, the background sweeps' orderquery (every
        # backend asks about unpaid orders older than a minute, a batch a minute)
        out = {"server": target.name, "orders": orders, "orders_per_s": res["rps"], "seconds": seconds,
               "cpu_s": cpu, "latency_ms": res.get("latency_ms"),
               "upstream_calls_per_order": (s1["requests"] - s0["requests"]) / orders}
        for key in cpu:
            out["%s_cpu_us_per_order" % key] = cpu[key] / orders * 1e6
        return out

    def request_run(self, target):
        """The minimal phase's load at one minimal server; its CPU per request handled."""
        p = self.p
        reqs = self.token_requests(target.port)
        c0 = target.count()
        res, cpu, seconds = self.window({"server": target.cpu},
                                        lambda: self.drive(target.port, reqs, "rotate", p["minimal"], p["minimal_s"]))
        handled = need(target.count() - c0, "request handled", target.child)
        self.check_load(target.name, res)
        return {"server": target.name, "requests": handled, "requests_per_s": res["rps"], "seconds": seconds,
                "cpu_s": cpu["server"], "cpu_us_per_request": cpu["server"] / handled * 1e6}

    def window(self, meters, fn):
        """fn() between two readings of each meter (name -> cumulative CPU seconds):
        (fn's result, {name: CPU seconds}, fn's wall seconds). Like measure(), it waits 0.3 s
        for work still in flight before the second reading."""
        before = {name: meter() for name, meter in meters.items()}
        t0 = time.monotonic()
        result = fn()
        seconds = time.monotonic() - t0
        time.sleep(0.3)
        return result, {name: meter() - before[name] for name, meter in meters.items()}, seconds

    @staticmethod
    def alternate(rounds, configs, run):
        """run(name, config, round) for each config once per round, the order reversed every
        other round (A B, B A, A B...), so a drift in the machine's load hits all alike."""
        results = {name: [] for name, _ in configs}
        for rnd in range(rounds):
            for name, config in (configs if rnd % 2 == 0 else configs[::-1]):
                results[name].append(run(name, config, rnd))
        return results

    def phase_pg(self):
        if self.postgres("pg") is None:
            return
        p = self.p
        configs = [("sqlite", self.sqlite_target()), ("postgresql", self.pg_target(1))]
        progress("PostgreSQL vs SQLite: the token phase's load (%s at concurrency %d) at the SQLite backend and "
                 "at a backend on PostgreSQL, alternated, %d rounds each"
                 % ("%d s" % p["token_s"] if self.use_wrk else "%d orders" % p["token"], p["concurrency"], p["pg_rounds"]))

        def run(name, target, rnd):
            r = self.token_run(target, with_pg=True)
            progress("  round %d %-10s %5d orders, %4.0f orders/s, backend %4.0f us CPU/order, PostgreSQL server "
                     "%4.0f us/order" % (rnd + 1, name, r["orders"], r["orders_per_s"],
                                         r["backend_cpu_us_per_order"], r["postgres_cpu_us_per_order"]))
            return r
        runs = self.alternate(p["pg_rounds"], configs, run)
        sq = [r["backend_cpu_us_per_order"] for r in runs["sqlite"]]
        pgb = [r["backend_cpu_us_per_order"] for r in runs["postgresql"]]
        pgs = [r["postgres_cpu_us_per_order"] for r in runs["postgresql"]]
        total = [b + s for b, s in zip(pgb, pgs)]
        self.phases["pg"] = {
            "runs": runs, "rounds": p["pg_rounds"],
            "sqlite_backend_cpu_us_per_order": spread(sq),
            "postgresql_backend_cpu_us_per_order": spread(pgb),
            "postgresql_server_cpu_us_per_order": spread(pgs),
            "postgresql_backend_plus_server_cpu_us_per_order": spread(total),
            "ratio_per_round": [b / a for a, b in zip(sq, pgb)],
            "total_ratio_per_round": [b / a for a, b in zip(sq, total)],
            "sqlite_orders_per_s": spread([r["orders_per_s"] for r in runs["sqlite"]]),
            "postgresql_orders_per_s": spread([r["orders_per_s"] for r in runs["postgresql"]]),
            "postgresql_server_cpu_us_per_order_during_sqlite_runs": spread(
                [r["postgres_cpu_us_per_order"] for r in runs["sqlite"]]),
            "postgresql": {"version": self.pg_version, "durable": True, "schema": PG_SCHEMA,
                           "pool": "the store's default: 10 connections per process"},
            "note": "SQLite does its database work inside the backend process (its database thread); "
                    "PostgreSQL does most of it in its own server processes, whose CPU is reported "
                    "separately (postgresql_server_*): the row compares the backend processes only"}
        self.figures["pg_cpu_ratio"] = statistics.median(pgb) / statistics.median(sq)
        self.figures["pg_total_cpu_ratio"] = statistics.median(total) / statistics.median(sq)
        progress("  median backend CPU per order: PostgreSQL %.0f us, SQLite %.0f us: %.2fx; PostgreSQL server "
                 "+%.0f us per order (backend + server %.2fx)"
                 % (statistics.median(pgb), statistics.median(sq), self.figures["pg_cpu_ratio"],
                    statistics.median(pgs), self.figures["pg_total_cpu_ratio"]))

    def phase_scale(self):
        if self.postgres("scale") is None:
            return
        p = self.p
        configs = [("1 process", self.pg_target(1)), ("2 processes", self.pg_target(2))]
        progress("scaling: token-flow orders at concurrency %d for %d s per run (bench/loadgen.py), run_server.py "
                 "on PostgreSQL with 1 and with --processes 2, alternated, %d rounds each"
                 % (p["scale_concurrency"], p["scale_s"], p["scale_rounds"]))

        def run(name, target, rnd):
            r = self.saturate(target)
            c = r["cores"]
            progress("  round %d %-11s %4.0f orders/s; cores: backend %.2f (%s), simulator %.2f, PostgreSQL %.2f, "
                     "load generator %.2f, rest of the bench %.2f; machine busy %.2f of %d (not ours %.2f)"
                     % (rnd + 1, name, r["orders_per_s"], c["backend"],
                        " + ".join("%.2f" % v for v in c["backend_processes"]), c["simulator"], c["postgres"],
                        c["loadgen"], c["bench_and_idle_servers"], c["machine_busy"], os.cpu_count(),
                        c["not_ours"]))
            return r
        runs = self.alternate(p["scale_rounds"], configs, run)
        one = [r["orders_per_s"] for r in runs["1 process"]]
        two = [r["orders_per_s"] for r in runs["2 processes"]]
        self.phases["scale"] = {
            "runs": runs, "rounds": p["scale_rounds"], "concurrency": p["scale_concurrency"],
            "run_seconds": p["scale_s"],
            "orders_per_s_1_process": spread(one), "orders_per_s_2_processes": spread(two),
            "ratio_per_round": [b / a for a, b in zip(one, two)],
            "cores_median": {name: {key: statistics.median(r["cores"][key] for r in rs)
                                    for key in rs[0]["cores"] if key != "backend_processes"}
                             for name, rs in runs.items()},
            "method": "bench/loadgen.py (one process, closed loop) for scale_s seconds; CPU and the database's "
                      "order count read twice in the steady middle of the run (from %.1f s after the start to "
                      "%.1f s before the end); cores = CPU seconds / window seconds; backend = its serving "
                      "processes (with --processes, the supervisor's children); machine_busy from /proc/stat; "
                      "not_ours = machine_busy minus every process of the bench (other users of the machine)"
                      % scale_window(p["scale_s"])[:2]}
        self.figures["scale_ratio"] = statistics.median(two) / statistics.median(one)
        progress("  median orders/s: 1 process %.0f, 2 processes %.0f: %.2fx"
                 % (statistics.median(one), statistics.median(two), self.figures["scale_ratio"]))

    def saturate(self, target):
        """One saturated run at a backend: orders/s and where the CPU went, in the run's
        steady middle (load generator started, connections and pools warm)."""
        p = self.p
        settle, tail, span = scale_window(p["scale_s"])
        spec = {"port": target.port, "requests": [order_request(target.port, token=t).decode("latin-1")
                                                  for t in target.tokens],
                "mode": "closed", "concurrency": p["scale_concurrency"], "count": 10 ** 9,
                "duration": p["scale_s"], "timeout": 30.0}
        path = os.path.join(self.workdir, "loadgen-scale.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        proc = subprocess.Popen(python_argv("bench/loadgen.py", path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            time.sleep(settle)
            a = self.snapshot(target, proc.pid)
            time.sleep(span)
            b = self.snapshot(target, proc.pid)
            out, err = proc.communicate(timeout=p["scale_s"] + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if proc.returncode != 0:
            raise BenchError("load generator failed (exit %d):\n%s" % (proc.returncode, err[-3000:]))
        res = json.loads(out)
        self.check_load(target.name, res)
        target.child.check_alive()
        dt = b["t"] - a["t"]
        if set(a["workers"]) != set(b["workers"]):
            self.notes.append("%s: serving processes changed during a run: %s -> %s"
                              % (target.name, sorted(a["workers"]), sorted(b["workers"])))
        procs = [(b["workers"][pid] - a["workers"].get(pid, 0.0)) / dt for pid in sorted(b["workers"])]
        cores = {key: (b[key] - a[key]) / dt for key in ("supervisor", "simulator", "postgres", "loadgen",
                                                         "bench_and_idle_servers", "machine_busy")}
        cores["backend"] = sum(procs)
        cores["backend_processes"] = procs
        ours = sum(v for k, v in cores.items() if k not in ("machine_busy", "backend_processes"))
        cores["ours"] = ours
        cores["not_ours"] = cores["machine_busy"] - ours
        orders = b["orders"] - a["orders"]
        per_order = {key: cores[key] * dt / orders * 1e6 for key in
                     ("backend", "simulator", "postgres", "loadgen", "machine_busy")} if orders > 0 else {}
        return {"orders_per_s": orders / dt, "window_s": dt, "orders_in_window": orders,
                "loadgen_rps": res["rps"], "loadgen_ok": res["ok"], "latency_ms": res["latency_ms"],
                "errors": res["errors"], "status": res["status"], "cores": cores,
                "cpu_us_per_order": per_order}

    def snapshot(self, target, loadgen_pid):
        orders = target.count()    # psql, first: its connection's CPU falls inside the window either way
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)   # psql; the load generator is reaped later
        idle = [c for c in self.children if c is not target.child and c is not self.sim]
        return {"orders": orders, "t": time.monotonic(), "machine_busy": machine_cpu_seconds()[0],
                "workers": target.workers(), "supervisor": cpu_seconds(target.child.pid) if target.processes > 1 else 0.0,
                "simulator": self.sim.cpu(), "postgres": self.pg_cpu(), "loadgen": cpu_seconds(loadgen_pid),
                "bench_and_idle_servers": (own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
                                           + sum(tree_cpu_seconds(c.pid) for c in idle))}

    def uvloop_targets(self):
        if "minimal-uvloop" not in self.targets:
            progress("starting minimal-uvloop (bench/minimal_server.py --event-loop uvloop) and backend-uvloop "
                     "(run_server.py --event-loop uvloop, on the backend's SQLite file)")
            port = free_port()
            child = self._child("minimal-uvloop", python_argv("bench/minimal_server.py", "--port", port,
                                                              "--event-loop", "uvloop"),
                                os.path.join(self.workdir, "minimal-uvloop.log"), port=port)
            target = Target("minimal-uvloop", child, port, lambda port=port: self.count_at(port))
            self.warm(target)
            self.targets[target.name] = target
            # the same database file as the asyncio backend (several processes on one SQLite file are
            # supported; only one is loaded at a time): the same tables, sizes and sessions
            child, port = self.start_backend("backend-uvloop", "sqlite:///" + self.db_path, "--event-loop", "uvloop")
            target = Target("backend-uvloop", child, port, self.orders_done)
            target.tokens = self.tokens
            self.warm(target)
            self.targets[target.name] = target
        return self.targets["minimal-uvloop"], self.targets["backend-uvloop"]

    def phase_uvloop(self):
        p = self.p
        min_uv, back_uv = self.uvloop_targets()
        min_as, back_as = self.minimal_target(), self.sqlite_target()
        loops = {t.name: event_loop_of(t.child.pid) for t in (min_as, min_uv, back_as, back_uv)}
        if loops != {"minimal": "asyncio", "minimal-uvloop": "uvloop", "backend": "asyncio", "backend-uvloop": "uvloop"}:
            raise BenchError("uvloop phase: the servers run on other event loops than asked: %s" % loops)
        progress("uvloop: the minimal phase's load at the minimal server on asyncio and on uvloop, then the "
                 "token phase's load at the backend on asyncio and on uvloop (one SQLite file), alternated, "
                 "%d rounds each" % p["uvloop_rounds"])

        def minimal(name, target, rnd):
            r = self.request_run(target)
            progress("  round %d minimal %-8s %6d requests, %5.0f req/s, %5.1f us CPU per request"
                     % (rnd + 1, name, r["requests"], r["requests_per_s"], r["cpu_us_per_request"]))
            return r

        def backend(name, target, rnd):
            r = self.token_run(target)
            progress("  round %d backend %-8s %5d orders, %4.0f orders/s, %4.0f us CPU per order"
                     % (rnd + 1, name, r["orders"], r["orders_per_s"], r["backend_cpu_us_per_order"]))
            return r
        mruns = self.alternate(p["uvloop_rounds"], [("asyncio", min_as), ("uvloop", min_uv)], minimal)
        bruns = self.alternate(p["uvloop_rounds"], [("asyncio", back_as), ("uvloop", back_uv)], backend)
        pg_part = self.uvloop_on_postgres()
        m = {k: [r["cpu_us_per_request"] for r in v] for k, v in mruns.items()}
        b = {k: [r["backend_cpu_us_per_order"] for r in v] for k, v in bruns.items()}
        self.phases["uvloop"] = {
            "uvloop_version": module_version("uvloop"), "event_loops_seen": loops,
            "minimal_runs": mruns, "backend_runs": bruns,
            "minimal_cpu_us_per_request": {k: spread(v) for k, v in m.items()},
            "backend_cpu_us_per_order": {k: spread(v) for k, v in b.items()},
            "simulator_cpu_us_per_order": {k: spread([r["simulator_cpu_us_per_order"] for r in v])
                                           for k, v in bruns.items()},
            "minimal_ratio_per_round": [u / a for a, u in zip(m["asyncio"], m["uvloop"])],
            "backend_ratio_per_round": [u / a for a, u in zip(b["asyncio"], b["uvloop"])],
            "minimal_requests_per_s": {k: spread([r["requests_per_s"] for r in v]) for k, v in mruns.items()},
            "backend_orders_per_s": {k: spread([r["orders_per_s"] for r in v]) for k, v in bruns.items()},
            "note": "backend on SQLite (its default engine; both processes on one database file, loaded in "
                    "turn); the simulator stays on asyncio",
            "postgresql": pg_part}
        self.figures["uvloop_minimal_ratio"] = statistics.median(m["uvloop"]) / statistics.median(m["asyncio"])
        self.figures["uvloop_backend_ratio"] = statistics.median(b["uvloop"]) / statistics.median(b["asyncio"])
        if pg_part and "skipped" not in pg_part:
            self.figures["uvloop_pg_backend_ratio"] = (pg_part["backend_cpu_us_per_order"]["uvloop"]["median"] /
                                                       pg_part["backend_cpu_us_per_order"]["asyncio"]["median"])
        progress("  medians: minimal %.1f us (uvloop) / %.1f us (asyncio) = %.2fx; backend %.0f / %.0f us = %.2fx"
                 % (statistics.median(m["uvloop"]), statistics.median(m["asyncio"]), self.figures["uvloop_minimal_ratio"],
                    statistics.median(b["uvloop"]), statistics.median(b["asyncio"]), self.figures["uvloop_backend_ratio"]))

    def uvloop_on_postgres(self):
        """The uvloop comparison of the backend again on PostgreSQL (asyncpg), when a
        PostgreSQL server can run here: {figures} or {"skipped": why}."""
        if self.postgres("uvloop on PostgreSQL", record=False) is None:
            return {"skipped": self.pg_unavailable}
        p = self.p
        configs = [("asyncio", self.pg_target(1)), ("uvloop", self.pg_target(1, "uvloop"))]
        loops = {t.name: event_loop_of(t.child.pid) for _, t in configs}
        if loops != {"backend-pg": "asyncio", "backend-pg-uvloop": "uvloop"}:
            raise BenchError("uvloop phase: the servers run on other event loops than asked: %s" % loops)
        progress("uvloop on PostgreSQL: the token phase's load at backend-pg (asyncio) and backend-pg-uvloop, "
                 "alternated, %d rounds each" % p["uvloop_rounds"])

        def run(name, target, rnd):
            r = self.token_run(target, with_pg=True)
            progress("  round %d backend on PostgreSQL %-8s %5d orders, %4.0f orders/s, %4.0f us CPU per order "
                     "(PostgreSQL server %4.0f us)" % (rnd + 1, name, r["orders"], r["orders_per_s"],
                                                        r["backend_cpu_us_per_order"], r["postgres_cpu_us_per_order"]))
            return r
        runs = self.alternate(p["uvloop_rounds"], configs, run)
        b = {k: [r["backend_cpu_us_per_order"] for r in v] for k, v in runs.items()}
        out = {"runs": runs, "event_loops_seen": loops,
               "backend_cpu_us_per_order": {k: spread(v) for k, v in b.items()},
               "postgresql_server_cpu_us_per_order": {k: spread([r["postgres_cpu_us_per_order"] for r in v])
                                                      for k, v in runs.items()},
               "backend_ratio_per_round": [u / a for a, u in zip(b["asyncio"], b["uvloop"])],
               "backend_orders_per_s": {k: spread([r["orders_per_s"] for r in v]) for k, v in runs.items()}}
        progress("  medians on PostgreSQL: backend %.0f us (uvloop) / %.0f us (asyncio) = %.2fx"
                 % (statistics.median(b["uvloop"]), statistics.median(b["asyncio"]),
                    statistics.median(b["uvloop"]) / statistics.median(b["asyncio"])))
        return out

    # -- the run -----------------------------------------------------------------------
    def run(self):
        self.start()
        self.login_users()
        self.warmup()
        self.phase_minimal()           # every ratio needs the baseline
        steps = [("token", self.phase_token), ("simdirect", self.phase_simdirect),
                 ("onecall", self.phase_onecall),
                 ("notify", self.phase_notify), ("simpay", self.phase_simpay),
                 ("burst", self.phase_burst), ("wechatpy", self.phase_wechatpy),
                 ("pg", self.phase_pg), ("scale", self.phase_scale), ("uvloop", self.phase_uvloop),
                 ("memory", self.phase_memory)]
        if self.args.quick and not self.args.only:
            progress("%s: not in --quick (more servers, a PostgreSQL server, alternated rounds); "
                     "--quick --only %s runs them small" % (", ".join(QUICK_SKIPS), ",".join(QUICK_SKIPS)))
        for name, fn in steps:
            if name in self.only:
                fn()
                self.check_alive()

    def meta(self):
        return {"profile": "quick" if self.args.quick else "full", "counts": self.p,
                "loadgen": (wrkdriver.wrk_version() if self.use_wrk else "bench/loadgen.py (asyncio)"),
                "loadgen_note": ("wrk drives the minimal, token, one-call and notify phases and the "
                                 "token-flow and minimal loads of pg and uvloop; "
                                 "bench/loadgen.py the simulator row (with its own minimal baseline), "
                                 "burst, memory, scale, code-fetching and /sim/pay phases"
                                 if self.use_wrk else "bench/loadgen.py drives every phase"),
                "cpus": os.cpu_count(), "python": platform.python_version(),
                "platform": platform.platform(), "clk_tck": os.sysconf("SC_CLK_TCK"),
                "tornado": __import__("tornado").version,
                "database": "temporary SQLite file in %s" % self.workdir,
                "postgresql": (getattr(self, "pg_version", None) and
                               "PostgreSQL %s, throwaway (tests/support/postgres.py), fsync on, schema %s"
                               % (self.pg_version, PG_SCHEMA)) or self.pg_unavailable,
                "uvloop": module_version("uvloop"), "asyncpg": module_version("asyncpg"),
                "phases": [name for name in PHASES if name in self.only or name == "minimal"],
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


def need(count, what, child):
    """A phase's denominator; a clear error (with the process's output) when nothing was done."""
    if count <= 0:
        raise BenchError("no %s in this phase; %s output:\n%s" % (what, child.name, child.output()))
    return count


def done_when(counter, target, threads=2):
    """A predicate for wrkdriver.run: counter() grew by target, or stalled after moving
    (0.3 s when at most one request per wrk thread is missing, else 2 s). check.progress
    holds (count, seconds from the first check to the last change) for the rate."""
    start, t0 = counter(), time.monotonic()
    state = {"last": 0, "since": t0}

    def check():
        now, value = time.monotonic(), counter() - start
        if value != state["last"]:
            state["last"], state["since"] = value, now
            check.progress = (value, now - t0)
        if value >= target:
            return True
        stalled = now - state["since"]
        return value > 0 and (stalled > 2.0 or (value >= target - threads and stalled > 0.3))
    check.progress = (0, 0.0)
    return check


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
        bench = Bench(args)
    except BenchError as exc:
        print("bench: error: %s" % exc, file=sys.stderr)
        return 2
    ok = False
    try:
        bench.run()
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
    rows = report.rows(bench)
    result = {"bench": "wxpay-tornado issue 5", "complete": ok, "meta": bench.meta(), "rows": rows,
              "phases": bench.phases, "notes": bench.notes}
    if bench.figures:
        report.print_table(rows, bench)
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
    if args.strict and any(r["pass"] is False for r in rows):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
