"""The phases of issue 14: PostgreSQL against SQLite, one process against two, uvloop against asyncio."""
import functools
import json
import os
import resource
import statistics
import subprocess
import time

from bench.common import (ROOT, BenchError, cpu_seconds, free_port, machine_cpu_seconds, order_request,
                          python_argv, tree_cpu_seconds)
from bench.rig import module_version, progress
from bench.servers import (PG_SCHEMA, Target, minimal_target, pg_cpu, pg_target, postgres, request_run,
                           sqlite_target, start_backend, token_run, warm)


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


def alternate(rounds, configs, run):
    """run(name, config, round) for each config once per round, the order reversed every
    other round (A B, B A, A B...), so a drift in the machine's load hits all alike."""
    results = {name: [] for name, _ in configs}
    for rnd in range(rounds):
        for name, config in (configs if rnd % 2 == 0 else configs[::-1]):
            results[name].append(run(name, config, rnd))
    return results


def token_rounds(bench, rounds, configs, form, with_pg=False):
    """alternate() with the token phase's load at each backend; a progress line a round, `form` % (round,
    name, orders, orders/s, backend CPU per order and, with_pg, the PostgreSQL server's CPU per order)."""
    def run(name, target, rnd):
        r = token_run(bench, target, with_pg=with_pg)
        figures = [r["orders"], r["orders_per_s"], r["backend_cpu_us_per_order"]]
        if with_pg:
            figures.append(r["postgres_cpu_us_per_order"])
        progress(form % (rnd + 1, name, *figures))
        return r
    return alternate(rounds, configs, run)


def phase_pg(bench):
    if postgres(bench, "pg") is None:
        return
    p = bench.p
    configs = [("sqlite", sqlite_target(bench)), ("postgresql", pg_target(bench, 1))]
    progress("PostgreSQL vs SQLite: the token phase's load (%s at concurrency %d) at the SQLite backend and "
             "at a backend on PostgreSQL, alternated, %d rounds each"
             % ("%d s" % p["token_s"] if bench.use_wrk else "%d orders" % p["token"], p["concurrency"], p["pg_rounds"]))
    runs = token_rounds(bench, p["pg_rounds"], configs, "  round %d %-10s %5d orders, %4.0f orders/s, backend "
                        "%4.0f us CPU/order, PostgreSQL server %4.0f us/order", with_pg=True)
    sq = [r["backend_cpu_us_per_order"] for r in runs["sqlite"]]
    pgb = [r["backend_cpu_us_per_order"] for r in runs["postgresql"]]
    pgs = [r["postgres_cpu_us_per_order"] for r in runs["postgresql"]]
    total = [b + s for b, s in zip(pgb, pgs)]
    bench.phases["pg"] = {
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
        "postgresql": {"version": bench.pg_version, "durable": True, "schema": PG_SCHEMA,
                       "pool": "the store's default: 10 connections per process"},
        "note": "SQLite does its database work inside the backend process (its database thread); "
                "PostgreSQL does most of it in its own server processes, whose CPU is reported "
                "separately (postgresql_server_*): the row compares the backend processes only"}
    bench.figures["pg_cpu_ratio"] = statistics.median(pgb) / statistics.median(sq)
    bench.figures["pg_total_cpu_ratio"] = statistics.median(total) / statistics.median(sq)
    progress("  median backend CPU per order: PostgreSQL %.0f us, SQLite %.0f us: %.2fx; PostgreSQL server "
             "+%.0f us per order (backend + server %.2fx)"
             % (statistics.median(pgb), statistics.median(sq), bench.figures["pg_cpu_ratio"],
                statistics.median(pgs), bench.figures["pg_total_cpu_ratio"]))


def phase_scale(bench):
    if postgres(bench, "scale") is None:
        return
    p = bench.p
    configs = [("1 process", pg_target(bench, 1)), ("2 processes", pg_target(bench, 2))]
    progress("scaling: token-flow orders at concurrency %d for %d s per run (bench/loadgen.py), run_server.py "
             "on PostgreSQL with 1 and with --processes 2, alternated, %d rounds each"
             % (p["scale_concurrency"], p["scale_s"], p["scale_rounds"]))
    runs = alternate(p["scale_rounds"], configs, functools.partial(scale_round, bench))
    one = [r["orders_per_s"] for r in runs["1 process"]]
    two = [r["orders_per_s"] for r in runs["2 processes"]]
    bench.phases["scale"] = {
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
    bench.figures["scale_ratio"] = statistics.median(two) / statistics.median(one)
    progress("  median orders/s: 1 process %.0f, 2 processes %.0f: %.2fx"
             % (statistics.median(one), statistics.median(two), bench.figures["scale_ratio"]))


def scale_round(bench, name, target, rnd):
    r = saturate(bench, target)
    c = r["cores"]
    progress("  round %d %-11s %4.0f orders/s; cores: backend %.2f (%s), simulator %.2f, PostgreSQL %.2f, "
             "load generator %.2f, rest of the bench %.2f; machine busy %.2f of %d (not ours %.2f)"
             % (rnd + 1, name, r["orders_per_s"], c["backend"],
                " + ".join("%.2f" % v for v in c["backend_processes"]), c["simulator"], c["postgres"],
                c["loadgen"], c["bench_and_idle_servers"], c["machine_busy"], os.cpu_count(),
                c["not_ours"]))
    return r


def saturate(bench, target):
    """One saturated run at a backend: orders/s and where the CPU went, in the run's
    steady middle (load generator started, connections and pools warm)."""
    settle, tail, span = scale_window(bench.p["scale_s"])
    proc = saturating_load(bench, target)
    try:
        time.sleep(settle)
        a = snapshot(bench, target, proc.pid)
        time.sleep(span)
        b = snapshot(bench, target, proc.pid)
        out, err = proc.communicate(timeout=bench.p["scale_s"] + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if proc.returncode != 0:
        raise BenchError("load generator failed (exit %d):\n%s" % (proc.returncode, err[-3000:]))
    res = json.loads(out)
    bench.check_load(target.name, res)
    target.child.check_alive()
    if set(a["workers"]) != set(b["workers"]):
        bench.notes.append("%s: serving processes changed during a run: %s -> %s"
                           % (target.name, sorted(a["workers"]), sorted(b["workers"])))
    return saturated_figures(a, b, res)


def saturating_load(bench, target):
    """bench/loadgen.py started on the token-flow orders at the target for scale_s seconds."""
    p = bench.p
    spec = {"port": target.port, "requests": [order_request(target.port, token=t).decode("latin-1")
                                              for t in target.tokens],
            "mode": "closed", "concurrency": p["scale_concurrency"], "count": 10 ** 9,
            "duration": p["scale_s"], "timeout": 30.0}
    path = os.path.join(bench.workdir, "loadgen-scale.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return subprocess.Popen(python_argv("bench/loadgen.py", path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def saturated_figures(a, b, res):
    """Orders/s and cores used (CPU seconds a second) of each part between two snapshots; with
    res, the load generator's own result."""
    dt = b["t"] - a["t"]
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


def snapshot(bench, target, loadgen_pid):
    orders = target.count()    # psql, first: its connection's CPU falls inside the window either way
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)   # psql; the load generator is reaped later
    idle = [c for c in bench.children if c is not target.child and c is not bench.sim]
    return {"orders": orders, "t": time.monotonic(), "machine_busy": machine_cpu_seconds()[0],
            "workers": target.workers(), "supervisor": cpu_seconds(target.child.pid) if target.processes > 1 else 0.0,
            "simulator": bench.sim.cpu(), "postgres": pg_cpu(bench), "loadgen": cpu_seconds(loadgen_pid),
            "bench_and_idle_servers": (own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
                                       + sum(tree_cpu_seconds(c.pid) for c in idle))}


def uvloop_targets(bench):
    if "minimal-uvloop" not in bench.targets:
        progress("starting minimal-uvloop (bench/minimal_server.py --event-loop uvloop) and backend-uvloop "
                 "(run_server.py --event-loop uvloop, on the backend's SQLite file)")
        port = free_port()
        child = bench.spawn("minimal-uvloop", python_argv("bench/minimal_server.py", "--port", port,
                                                          "--event-loop", "uvloop"),
                            os.path.join(bench.workdir, "minimal-uvloop.log"), port=port)
        target = Target("minimal-uvloop", child, port, lambda port=port: bench.count_at(port))
        warm(bench, target)
        bench.targets[target.name] = target
        # the same database file as the asyncio backend (several processes on one SQLite file are
        # supported; only one is loaded at a time): the same tables, sizes and sessions
        child, port = start_backend(bench, "backend-uvloop", "sqlite:///" + bench.db_path, "--event-loop", "uvloop")
        target = Target("backend-uvloop", child, port, bench.orders_done)
        target.tokens = bench.tokens
        warm(bench, target)
        bench.targets[target.name] = target
    return bench.targets["minimal-uvloop"], bench.targets["backend-uvloop"]


def phase_uvloop(bench):
    p = bench.p
    min_uv, back_uv = uvloop_targets(bench)
    min_as, back_as = minimal_target(bench), sqlite_target(bench)
    loops = event_loops((min_as, min_uv, back_as, back_uv), {"minimal": "asyncio", "minimal-uvloop": "uvloop",
                                                             "backend": "asyncio", "backend-uvloop": "uvloop"})
    progress("uvloop: the minimal phase's load at the minimal server on asyncio and on uvloop, then the "
             "token phase's load at the backend on asyncio and on uvloop (one SQLite file), alternated, "
             "%d rounds each" % p["uvloop_rounds"])
    mruns = alternate(p["uvloop_rounds"], [("asyncio", min_as), ("uvloop", min_uv)],
                      functools.partial(minimal_round, bench))
    bruns = token_rounds(bench, p["uvloop_rounds"], [("asyncio", back_as), ("uvloop", back_uv)],
                         "  round %d backend %-8s %5d orders, %4.0f orders/s, %4.0f us CPU per order")
    pg_part = uvloop_on_postgres(bench)
    m, b = by_config(mruns, "cpu_us_per_request"), by_config(bruns, "backend_cpu_us_per_order")
    bench.phases["uvloop"] = {
        "uvloop_version": module_version("uvloop"), "event_loops_seen": loops,
        "minimal_runs": mruns, "backend_runs": bruns,
        "minimal_cpu_us_per_request": m, "backend_cpu_us_per_order": b,
        "simulator_cpu_us_per_order": by_config(bruns, "simulator_cpu_us_per_order"),
        "minimal_ratio_per_round": per_round(mruns, "cpu_us_per_request"),
        "backend_ratio_per_round": per_round(bruns, "backend_cpu_us_per_order"),
        "minimal_requests_per_s": by_config(mruns, "requests_per_s"),
        "backend_orders_per_s": by_config(bruns, "orders_per_s"),
        "note": "backend on SQLite (its default engine; both processes on one database file, loaded in "
                "turn); the simulator stays on asyncio",
        "postgresql": pg_part}
    bench.figures["uvloop_minimal_ratio"] = uvloop_ratio(m)
    bench.figures["uvloop_backend_ratio"] = uvloop_ratio(b)
    if pg_part and "skipped" not in pg_part:
        bench.figures["uvloop_pg_backend_ratio"] = uvloop_ratio(pg_part["backend_cpu_us_per_order"])
    progress("  medians: minimal %.1f us (uvloop) / %.1f us (asyncio) = %.2fx; backend %.0f / %.0f us = %.2fx"
             % (m["uvloop"]["median"], m["asyncio"]["median"], bench.figures["uvloop_minimal_ratio"],
                b["uvloop"]["median"], b["asyncio"]["median"], bench.figures["uvloop_backend_ratio"]))


def minimal_round(bench, name, target, rnd):
    r = request_run(bench, target)
    progress("  round %d minimal %-8s %6d requests, %5.0f req/s, %5.1f us CPU per request"
             % (rnd + 1, name, r["requests"], r["requests_per_s"], r["cpu_us_per_request"]))
    return r


def uvloop_on_postgres(bench):
    """The uvloop comparison of the backend again on PostgreSQL (asyncpg), when a
    PostgreSQL server can run here: {figures} or {"skipped": why}."""
    if postgres(bench, "uvloop on PostgreSQL", record=False) is None:
        return {"skipped": bench.pg_unavailable}
    p = bench.p
    configs = [("asyncio", pg_target(bench, 1)), ("uvloop", pg_target(bench, 1, "uvloop"))]
    loops = event_loops([t for _, t in configs], {"backend-pg": "asyncio", "backend-pg-uvloop": "uvloop"})
    progress("uvloop on PostgreSQL: the token phase's load at backend-pg (asyncio) and backend-pg-uvloop, "
             "alternated, %d rounds each" % p["uvloop_rounds"])
    runs = token_rounds(bench, p["uvloop_rounds"], configs, "  round %d backend on PostgreSQL %-8s %5d orders, "
                        "%4.0f orders/s, %4.0f us CPU per order (PostgreSQL server %4.0f us)", with_pg=True)
    b = by_config(runs, "backend_cpu_us_per_order")
    out = {"runs": runs, "event_loops_seen": loops, "backend_cpu_us_per_order": b,
           "postgresql_server_cpu_us_per_order": by_config(runs, "postgres_cpu_us_per_order"),
           "backend_ratio_per_round": per_round(runs, "backend_cpu_us_per_order"),
           "backend_orders_per_s": by_config(runs, "orders_per_s")}
    progress("  medians on PostgreSQL: backend %.0f us (uvloop) / %.0f us (asyncio) = %.2fx"
             % (b["uvloop"]["median"], b["asyncio"]["median"], uvloop_ratio(b)))
    return out


def event_loops(targets, expected):
    """{server: event loop} of the targets, which must be the expected ones."""
    loops = {t.name: event_loop_of(t.child.pid) for t in targets}
    if loops != expected:
        raise BenchError("uvloop phase: the servers run on other event loops than asked: %s" % loops)
    return loops


def by_config(runs, key):
    """{configuration: spread of a round's figure `key` over its rounds}."""
    return {k: spread([r[key] for r in v]) for k, v in runs.items()}


def per_round(runs, key):
    """uvloop / asyncio of a round's figure `key`, round by round."""
    return [u[key] / a[key] for a, u in zip(runs["asyncio"], runs["uvloop"])]


def uvloop_ratio(spreads):
    """uvloop / asyncio of the medians."""
    return spreads["uvloop"]["median"] / spreads["asyncio"]["median"]
