"""The bench's shared machinery: its processes, their CPU readings, the loads and the run's state."""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

import requests  # (in requirements.txt)

from bench import wrkdriver
from bench.common import DEMO, ROOT, BenchError, Child, free_port, order_request, python_argv

T0 = time.monotonic()


def progress(msg):
    print("[bench %6.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


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


def module_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


class Bench:
    """The run's options, processes, state and figures; what every phase uses to load and measure."""

    def __init__(self, args, counts, only):
        self.args = args
        self.p = counts       # the profile's counts, with --memory-orders and --set applied
        self.only = only      # the phases to run after the baseline
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="wxpay-bench-")
        os.makedirs(self.workdir, exist_ok=True)
        self.children = []
        self.pg = None               # the throwaway PostgreSQL server, started by the first phase needing it
        self.pg_unavailable = None   # or why it cannot start
        self.targets = {}            # the servers started for the pg, scale and uvloop phases
        self.pg_tokens = None        # sessions at the PostgreSQL backends (one schema: valid at all)
        self.pg_url = self.postmaster = self.pg_version = None   # set when the PostgreSQL server starts
        self.notified = ()           # the orders the notify phase paid (the simpay phase leaves them out)
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
        self.sim = self.spawn("simulator", python_argv("run_simulator.py", "--port", self.sim_port),
                              log("simulator"), port=self.sim_port)
        self.db_path = os.path.join(self.workdir, "bench.db")
        argv = python_argv("run_server.py", "--port", self.backend_port,
                           "--database-url", "sqlite:///" + self.db_path)
        if self.args.profile_backend:
            argv = [sys.executable, "-m", "cProfile", "-o", os.path.abspath(self.args.profile_backend)] + argv[1:]
        self.backend = self.spawn("backend", argv, log("backend"), env=self.backend_env(self.backend_port),
                                  port=self.backend_port)
        self.minimal = self.spawn("minimal", python_argv("bench/minimal_server.py", "--port", self.minimal_port),
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

    def spawn(self, name, argv, log_path, env=None, port=None):
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
        return self.count_at(self.minimal_port)

    def count_at(self, port):
        return self.http.get("http://127.0.0.1:%d/count" % port, timeout=5).json()["count"]

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
