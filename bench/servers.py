"""The servers the pg, scale and uvloop phases start and compare, and the throwaway PostgreSQL server."""
import os
import time

import requests  # (in requirements.txt)

from bench.common import (BenchError, children_of, cpu_seconds, free_port, order_request, python_argv,
                          tree_cpu_seconds)
from bench.rig import need, progress

PG_SCHEMA = "bench"


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


def postgres(bench, phase, record=True):
    """The throwaway PostgreSQL server (durable: fsync on), started once for the phases
    that need it; None, with one line saying why, when it cannot start here (and, with
    record, the phase noted as skipped in the JSON)."""
    if bench.pg is None and bench.pg_unavailable is None:
        try:
            from tests.support.postgres import PostgresServer, Unavailable
        except ImportError as exc:
            bench.pg_unavailable = "cannot import tests/support/postgres.py: %s" % exc
        else:
            server = PostgresServer(durable=True)
            try:
                bench.pg = server.start()
            except Unavailable as exc:
                server.stop()
                bench.pg_unavailable = str(exc)
            else:
                bench.pg_url = bench.pg.create_schema(PG_SCHEMA)
                with open(os.path.join(bench.pg.folder, "data", "postmaster.pid")) as f:
                    bench.postmaster = int(f.readline())
                bench.pg_version = bench.pg.psql("SHOW server_version")
                progress("started a throwaway PostgreSQL %s (fsync on) on port %d, postmaster pid %d"
                         % (bench.pg_version, bench.pg.port, bench.postmaster))
    if bench.pg is None:
        progress("%s: skipped: %s" % (phase, bench.pg_unavailable))
        if record:
            bench.phases[phase] = {"skipped": bench.pg_unavailable}
        return None
    return bench.pg


def pg_cpu(bench):
    """CPU of the PostgreSQL server: the postmaster, its children (a process per
    connection, the checkpointer, WAL writer, autovacuum...) and the children it reaped."""
    return tree_cpu_seconds(bench.postmaster)


def pg_orders(bench):
    return int(bench.pg.psql("SELECT COUNT(*) FROM %s.orders WHERE prepay_id IS NOT NULL" % PG_SCHEMA))


def sqlite_target(bench):
    if "backend" not in bench.targets:
        target = Target("backend", bench.backend, bench.backend_port, bench.orders_done)
        target.tokens = bench.tokens
        bench.targets["backend"] = target
    return bench.targets["backend"]


def minimal_target(bench):
    if "minimal" not in bench.targets:
        bench.targets["minimal"] = Target("minimal", bench.minimal, bench.minimal_port,
                                          lambda: bench.count_at(bench.minimal_port))
    return bench.targets["minimal"]


def start_backend(bench, name, database_url, *flags):
    port = free_port()
    argv = python_argv("run_server.py", "--port", port, "--database-url", database_url, *flags)
    child = bench.spawn(name, argv, os.path.join(bench.workdir, name + ".log"),
                        env=bench.backend_env(port), port=port)
    deadline = time.monotonic() + 20
    while True:     # --processes N: the supervisor listens before its children serve
        try:
            r = bench.http.get("http://127.0.0.1:%d/healthz" % port, timeout=10)
            if r.status_code == 200:
                break
        except requests.RequestException:
            r = None
        child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError("%s /healthz: %s\n%s" % (name, r and r.status_code, child.output()))
        time.sleep(0.1)
    return child, port


def warm(bench, target, concurrency=None):
    """Unmeasured orders (or requests) at a new server: imports, pools, caches."""
    if target.tokens is None:
        reqs, count = bench.token_requests(target.port), min(1000, bench.p["minimal"])
    else:
        reqs, count = [order_request(target.port, token=t) for t in target.tokens], bench.p["warmup"]
    res = bench.loadgen(target.port, reqs, count=count, concurrency=concurrency)
    bench.check_load("warm-up " + target.name, res)


def pg_target(bench, processes, event_loop="asyncio"):
    """A backend on the PostgreSQL schema: one process, or run_server.py --processes N;
    on asyncio or uvloop. Every one uses the same schema (the same tables and sessions:
    the tokens of the first work at all of them); only one is loaded at a time."""
    name = "backend-pg" + ("-x%d" % processes if processes > 1 else "") + ("-uvloop" if event_loop == "uvloop" else "")
    if name not in bench.targets:
        flags = (("--processes", processes) if processes > 1 else ()) + (
            ("--event-loop", event_loop) if event_loop != "asyncio" else ())
        progress("starting %s: run_server.py %son PostgreSQL" % (name, "".join("%s " % f for f in flags)))
        child, port = start_backend(bench, name, bench.pg_url, *flags)
        target = Target(name, child, port, lambda: pg_orders(bench), processes)
        if processes > 1:
            deadline = time.monotonic() + 20
            while len(children_of(child.pid)) < processes:
                child.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError("%s: %d processes, not %d" % (name, len(children_of(child.pid)), processes))
                time.sleep(0.1)
        if bench.pg_tokens is None:
            bench.pg_tokens = bench.login(port)[0]
        target.tokens = bench.pg_tokens
        warm(bench, target, concurrency=max(bench.p["concurrency"], bench.p["scale_concurrency"]))
        bench.targets[name] = target
    return bench.targets[name]


def token_run(bench, target, with_pg=False):
    """The token phase's load (same requests, counts, concurrency, generator) at one
    backend; CPU of the backend (its serving processes), the simulator and, with_pg,
    the PostgreSQL server."""
    p = bench.p
    reqs = [order_request(target.port, token=t) for t in target.tokens]
    meters = {"backend": target.cpu, "simulator": bench.sim.cpu}
    if with_pg:
        meters["postgres"] = lambda: pg_cpu(bench)
    o0, s0 = target.count(), bench.upstream_stats()
    res, cpu, seconds = bench.window(meters, lambda: bench.drive(target.port, reqs, "rotate", p["token"], p["token_s"]))
    orders, s1 = need(target.count() - o0, "order created", target.child), bench.upstream_stats()
    bench.check_load(target.name, res)
    # above 1: other WeChat calls in the window, the background sweeps' orderquery (every
    # backend asks about unpaid orders older than a minute, a batch a minute)
    out = {"server": target.name, "orders": orders, "orders_per_s": res["rps"], "seconds": seconds,
           "cpu_s": cpu, "latency_ms": res.get("latency_ms"),
           "upstream_calls_per_order": (s1["requests"] - s0["requests"]) / orders}
    for key in cpu:
        out["%s_cpu_us_per_order" % key] = cpu[key] / orders * 1e6
    return out


def request_run(bench, target):
    """The minimal phase's load at one minimal server; its CPU per request handled."""
    p = bench.p
    reqs = bench.token_requests(target.port)
    c0 = target.count()
    res, cpu, seconds = bench.window({"server": target.cpu},
                                     lambda: bench.drive(target.port, reqs, "rotate", p["minimal"], p["minimal_s"]))
    handled = need(target.count() - c0, "request handled", target.child)
    bench.check_load(target.name, res)
    return {"server": target.name, "requests": handled, "requests_per_s": res["rps"], "seconds": seconds,
            "cpu_s": cpu["server"], "cpu_us_per_request": cpu["server"] / handled * 1e6}
