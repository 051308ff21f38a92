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

from bench import wrkdriver  # noqa: E402
from bench.common import (DEMO, ROOT, BenchError, Child, free_port,  # noqa: E402
                          notification_xml, order_request, pay_sign_params, python_argv,
                          raw_request, sign_md5, to_xml)

PROFILES = {
    # users: logged-in users whose tokens the token-flow phases rotate through
    "full": dict(users=200, concurrency=50, warmup=1000, minimal=20000, minimal_s=10,
                 token=8000, token_s=15, onecall=4000, notify=4000, simpay=1000, burst=500,
                 burst_reps=3, wechatpy=500, memory=100000, memory_chunk=5000),
    "quick": dict(users=20, concurrency=50, warmup=200, minimal=2000, minimal_s=2,
                  token=600, token_s=2, onecall=300, notify=300, simpay=100, burst=100,
                  burst_reps=1, wechatpy=64, memory=2000, memory_chunk=500),
}
LATENCY_MS = 250
WECHATPY_THREADS = 16
PHASES = ("minimal", "token", "simdirect", "onecall", "notify", "simpay", "burst", "wechatpy", "memory")

ROWS = [
    # id, measurement, goal text, check(figure) -> bool
    ("token_cpu_ratio", "backend CPU per created order (token flow) / minimal handler",
     "<= 2.0", lambda x: x <= 2.0),
    ("onecall_cpu_ratio", "backend CPU per created order (one-call flow: code in body) / minimal",
     "<= 3.0", lambda x: x <= 3.0),
    ("notify_cpu_ratio", "backend CPU per processed notification / minimal handler",
     "<= 1.5", lambda x: x <= 1.5),
    ("sim_cpu_ratio", "simulator CPU per unifiedorder / minimal handler (both direct)",
     "<= 1.5", lambda x: x <= 1.5),
    ("burst_wall", "500 concurrent orders, 250 ms WeChat latency: wall time (s)",
     "<= 0.75 s", lambda x: x <= 0.75),
    ("new_conns_per_1000", "new upstream TCP connections per 1000 upstream calls (steady)",
     "<= 10", lambda x: x <= 10),
    ("memory_rss", "backend RSS after 100,000 orders (MB), flat over the run",
     "<= 100 MB, flat", None),
    ("wechatpy_speedup", "same burst via wechatpy sync client, 16 threads: theirs / ours",
     ">= 20x", lambda x: x >= 20),
]
MEMORY_FLAT_TOLERANCE = 0.05   # RSS may grow at most 5% from 50% to 100% of the run

T0 = time.monotonic()


def progress(msg):
    print("[bench %6.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


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
        self.only = set(args.only.split(",")) if args.only else set(PHASES)
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="wxpay-bench-")
        os.makedirs(self.workdir, exist_ok=True)
        self.children = []
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
        upstream = "http://127.0.0.1:%d" % self.sim_port  # connections counted by the simulator
        env = {"WECHAT_APPID": DEMO["appid"], "WECHAT_APP_SECRET": DEMO["app_secret"],
               "WECHAT_MCH_ID": DEMO["mch_id"], "WECHAT_API_KEY": DEMO["api_key"],
               "WECHAT_NOTIFY_URL": "http://127.0.0.1:%d/wechat/pay/notify" % self.backend_port,
               "WECHAT_LOGIN_BASE_URL": upstream, "WECHAT_PAY_BASE_URL": upstream,
               # everything else at the backend's defaults, whatever the caller's shell says
               "WECHAT_SIGN_TYPE": None, "WECHAT_TIMEOUT": None, "DATABASE_URL": None,
               "CATALOG_FILE": None, "SESSION_TTL": None, "SPBILL_CREATE_IP": None,
               "LOG_LEVEL": None, "WECHAT_CERT_FILE": None, "WECHAT_KEY_FILE": None,
               "WECHAT_CA_FILE": None, "WECHAT_REFUND_NOTIFY_URL": None, "ADMIN_TOKEN": None}
        argv = python_argv("run_server.py", "--port", self.backend_port,
                           "--database-url", "sqlite:///" + self.db_path)
        if self.args.profile_backend:
            argv = [sys.executable, "-m", "cProfile", "-o", os.path.abspath(self.args.profile_backend)] + argv[1:]
        self.backend = self._child("backend", argv, log("backend"), env=env, port=self.backend_port)
        self.minimal = self._child("minimal", python_argv("bench/minimal_server.py", "--port", self.minimal_port),
                                   log("minimal"), port=self.minimal_port)
        progress("pids: simulator %d, backend %d, minimal %d"
                 % (self.sim.pid, self.backend.pid, self.minimal.pid))
        r = self.http.get("http://127.0.0.1:%d/healthz" % self.backend_port, timeout=10)
        if r.status_code != 200:
            raise BenchError("backend /healthz answered %d: %s\n%s" % (r.status_code, r.text, self.backend.output()))

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
        n = self.p["users"]
        progress("logging in %d users (wx.login at the simulator, POST /api/login): not measured" % n)
        self.tokens, self.openids = [], []
        for i in range(n):
            r = self.http.post(self.sim_url + "/sim/login", json={"appid": DEMO["appid"], "user": "bench-%d" % i}, timeout=10)
            r.raise_for_status()
            self.openids.append(r.json()["openid"])
            r2 = self.http.post(self.backend_url + "/api/login", json={"code": r.json()["code"]}, timeout=10)
            if r2.status_code != 200:
                raise BenchError("POST /api/login answered %d: %s" % (r2.status_code, r2.text))
            self.tokens.append(r2.json()["token"])

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
                 ("memory", self.phase_memory)]
        for name, fn in steps:
            if name in self.only:
                fn()
                self.check_alive()

    def rows(self):
        out = []
        for rid, text, goal, check in ROWS:
            fig = self.figures.get(rid)
            if fig is None:
                ok = None
            elif rid == "memory_rss":
                ok = fig <= 100.0 and self.memory_flat
            else:
                ok = bool(check(fig))
            out.append({"id": rid, "measurement": text, "figure": fig, "goal": goal, "pass": ok})
        return out

    def meta(self):
        return {"profile": "quick" if self.args.quick else "full", "counts": self.p,
                "loadgen": (wrkdriver.wrk_version() if self.use_wrk else "bench/loadgen.py (asyncio)"),
                "loadgen_note": ("wrk drives the minimal, token, one-call and notify phases; "
                                 "bench/loadgen.py the simulator row (with its own minimal baseline), "
                                 "burst, memory, code-fetching and /sim/pay phases"
                                 if self.use_wrk else "bench/loadgen.py drives every phase"),
                "cpus": os.cpu_count(), "python": platform.python_version(),
                "platform": platform.platform(), "clk_tck": os.sysconf("SC_CLK_TCK"),
                "tornado": __import__("tornado").version,
                "database": "temporary SQLite file in %s" % self.workdir,
                "backend": "run_server.py with its defaults (MD5, LOG_LEVEL unset = INFO), upstream via "
                           "straight to run_simulator.py (time scale 1), which counts connections (/sim/stats)",
                "cpu_accounting": "utime+stime from /proc/<pid>/stat (all threads), before/after each phase",
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


def fmt(rid, fig):
    if fig is None:
        return "not run"
    if rid == "burst_wall":
        return "%.3f s" % fig
    if rid == "memory_rss":
        return "%.1f MB" % fig
    if rid == "new_conns_per_1000":
        return "%.2f" % fig
    return "%.2fx" % fig


def print_table(rows, bench):
    extra = {
        "token_cpu_ratio": lambda: "%.0f/%.0f us" % (bench.phases["token"]["backend_cpu_us_per_order"], bench.baseline * 1e6),
        "onecall_cpu_ratio": lambda: "%.0f/%.0f us" % (bench.phases["onecall"]["backend_cpu_us_per_order"], bench.baseline * 1e6),
        "notify_cpu_ratio": lambda: "%.0f/%.0f us" % (bench.phases["notify"]["backend_cpu_us_per_notification"], bench.baseline * 1e6),
        "sim_cpu_ratio": lambda: "%.0f/%.0f us direct (in flow: %.0f us)" % (
            bench.phases["simdirect"]["simulator_cpu_us_per_unifiedorder"],
            bench.phases["simdirect"]["minimal_cpu_us_per_request"],
            bench.phases.get("token", {}).get("simulator_cpu_us_per_unifiedorder", float("nan"))),
        "burst_wall": lambda: "%d orders, runs %s" % (bench.phases["burst"]["orders"], ", ".join("%.3f" % w for w in bench.phases["burst"]["wall_s_all"])),
        "new_conns_per_1000": lambda: "%d conns / %d calls" % (bench.phases["token"]["new_upstream_connections"], bench.phases["token"]["upstream_calls"]),
        "memory_rss": lambda: "%d orders; %.1f MB at 50%%, %+.1f%% to 100%%" % (bench.phases["memory"]["orders"], bench.phases["memory"]["rss_half_mb"], 100 * bench.phases["memory"]["growth_second_half"]),
        "wechatpy_speedup": lambda: "%d orders: %.2f s vs %.3f s" % (bench.phases["wechatpy"]["count"], bench.phases["wechatpy"]["wall"], bench.phases["wechatpy"]["ours_wall_s"]),
    }
    lines = []
    header = ("measurement", "figure", "detail", "goal", "result")
    table = []
    for r in rows:
        try:
            detail = extra[r["id"]]() if r["figure"] is not None else ""
        except KeyError:
            detail = ""
        result = "-" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        table.append((r["measurement"], fmt(r["id"], r["figure"]), detail, r["goal"], result))
    widths = [max(len(str(row[i])) for row in table + [header]) for i in range(5)]
    sep = "-+-".join("-" * w for w in widths)
    lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append(sep)
    for row in table:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print("\n" + "\n".join(lines), flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description="wxpay-tornado benchmark suite (issue 5)")
    p.add_argument("--quick", action="store_true", help="small counts (the smoke test)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"), help="JSON output file")
    p.add_argument("--loadgen", choices=["auto", "wrk", "asyncio"], default="auto",
                   help="auto: wrk when on PATH, else the bundled asyncio generator")
    p.add_argument("--only", help="comma-separated phases to run after the baseline: " + ",".join(PHASES[1:]))
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
    rows = bench.rows()
    result = {"bench": "wxpay-tornado issue 5", "complete": ok, "meta": bench.meta(), "rows": rows,
              "phases": bench.phases, "notes": bench.notes}
    if bench.figures:
        print_table(rows, bench)
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
