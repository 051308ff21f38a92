"""The latency phases and memory: the 250 ms burst, the same burst via wechatpy, RSS over many orders."""
import json
import os
import statistics
import subprocess
import time

from bench.common import ROOT, BenchError, order_request, python_argv
from bench.rig import progress

LATENCY_MS = 250
WECHATPY_THREADS = 16
MEMORY_FLAT_TOLERANCE = 0.05   # RSS may grow at most 5% from 50% to 100% of the run


def set_latency(bench):
    r = bench.http.post(bench.sim_url + "/sim/faults", timeout=10,
                        json={"path": "/pay/unifiedorder", "kind": "latency", "value": LATENCY_MS})
    if r.status_code != 201:
        raise BenchError("POST /sim/faults answered %d: %s" % (r.status_code, r.text))


def clear_faults(bench):
    bench.http.delete(bench.sim_url + "/sim/faults", timeout=10)


def phase_burst(bench):
    n, reps = bench.p["burst"], bench.p["burst_reps"]
    progress("burst: %d orders all in flight at once, %d ms injected unifiedorder latency, %d run(s)"
             % (n, LATENCY_MS, reps))
    set_latency(bench)
    try:
        runs = [burst_run(bench, n, rep) for rep in range(reps)]
        walls = [r["wall_s"] for r in runs]
        wall = statistics.median(walls)
        if any(r["ok"] != n for r in runs):
            bench.notes.append("burst: not every order was answered 201: %s" % [r["status"] for r in runs])
        bench.phases["burst"] = {"orders": n, "latency_ms": LATENCY_MS, "runs": runs,
                                 "wall_s_median": wall, "wall_s_all": walls,
                                 "note": "connections opened before the clock starts; wall = first "
                                         "send to last answer; the figure is the median run"}
        bench.figures["burst_wall"] = wall
    finally:
        clear_faults(bench)


def burst_load(bench, n):
    """n token-flow orders all sent at once (bench/loadgen.py's burst mode): its result."""
    reqs = [order_request(bench.backend_port, token=bench.tokens[i % len(bench.tokens)]) for i in range(n)]
    return bench.loadgen(bench.backend_port, reqs, mode="burst", timeout=120)


def burst_run(bench, n, rep):
    """One run of the burst phase: wall time, answers, new upstream connections, backend CPU."""
    s0, o0 = bench.upstream_stats(), bench.orders_done()
    before = bench.backend.cpu()
    res = burst_load(bench, n)
    cpu = bench.backend.cpu() - before
    s1 = bench.upstream_stats()
    bench.check_load("burst", res)
    run = {"wall_s": res["wall"], "ok": res["ok"], "status": res["status"],
           "errors": res["errors"], "latency_ms": res["latency_ms"],
           "orders_created": bench.orders_done() - o0,
           "new_upstream_connections": s1["accepted"] - s0["accepted"],
           "backend_cpu_s": cpu}
    progress("  run %d: %.3f s wall, %d/%d answered 201, %d new upstream connections"
             % (rep + 1, res["wall"], res["ok"], n, s1["accepted"] - s0["accepted"]))
    return run


def phase_wechatpy(bench):
    n = bench.p["wechatpy"]
    progress("wechatpy comparison: %d x order.create (JSAPI) in a ThreadPoolExecutor(%d), %d ms latency"
             % (n, WECHATPY_THREADS, LATENCY_MS))
    res = wechatpy_burst(bench, n)
    if res["errors"]:
        bench.notes.append("wechatpy: %d errors: %s" % (res["errors"], res["error_samples"]))
    ours = bench.phases.get("burst", {})
    bench.phases["wechatpy"] = dict(res, note="straight at the simulator, like the backend; same latency fault")
    if ours and ours["orders"] == n:
        ours_wall = ours["wall_s_median"]
    else:
        # the quick profile or --only: measure ours at the same count
        phase_burst_count(bench, n)
        ours_wall = bench.phases["burst_same_count"]["wall_s"]
    bench.figures["wechatpy_speedup"] = res["wall"] / ours_wall
    bench.phases["wechatpy"]["ours_wall_s"] = ours_wall
    progress("  wechatpy: %.3f s wall for %d orders (%d ok) vs ours %.3f s: %.1fx"
             % (res["wall"], n, res["ok"], ours_wall, res["wall"] / ours_wall))


def wechatpy_burst(bench, n):
    """bench/wechatpy_burst.py's n orders at the simulator, with the latency fault: its JSON result."""
    spec = {"sim_url": bench.sim_url, "openids": bench.openids, "count": n, "threads": WECHATPY_THREADS,
            "notify_url": "http://127.0.0.1:%d/wechat/pay/notify" % bench.backend_port}
    path = os.path.join(bench.workdir, "wechatpy-spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    set_latency(bench)
    try:
        limit = 60 + n * LATENCY_MS / 1000.0
        out = subprocess.run(python_argv("bench/wechatpy_burst.py", path), capture_output=True,
                             text=True, timeout=limit, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise BenchError("wechatpy burst did not finish within %.0f s" % limit) from None
    finally:
        clear_faults(bench)
    if out.returncode != 0:
        raise BenchError("wechatpy burst failed:\n" + out.stderr[-3000:])
    return json.loads(out.stdout)


def phase_burst_count(bench, n):
    set_latency(bench)
    try:
        res = burst_load(bench, n)
    finally:
        clear_faults(bench)
    bench.phases["burst_same_count"] = {"orders": n, "wall_s": res["wall"], "ok": res["ok"]}


def phase_memory(bench):
    total, chunk = bench.p["memory"], bench.p["memory_chunk"]
    progress("memory: %d token-flow orders in chunks of %d, VmRSS sampled after each chunk" % (total, chunk))
    samples = memory_samples(bench, total, chunk)
    done = samples[-1]["orders"]
    half = min(samples, key=lambda s: abs(s["orders"] - done / 2))
    final = samples[-1]["rss_mb"]
    growth = (final - half["rss_mb"]) / half["rss_mb"]
    second_half = [s for s in samples if s["orders"] >= half["orders"]]
    slope = ((second_half[-1]["rss_mb"] - second_half[0]["rss_mb"]) /
             max(1, second_half[-1]["orders"] - second_half[0]["orders"]) * 10000)
    hwm = peak_rss_mb(bench.backend.pid)
    bench.phases["memory"] = {"orders": done, "samples": samples, "rss_start_mb": samples[0]["rss_mb"],
                              "rss_half_mb": half["rss_mb"], "rss_final_mb": final, "rss_peak_mb": hwm,
                              "growth_second_half": growth, "slope_mb_per_10k_orders_second_half": slope,
                              "flat_tolerance": MEMORY_FLAT_TOLERANCE,
                              "orders_in_database": bench.db("SELECT COUNT(*) FROM orders")[0][0]}
    bench.figures["memory_rss"] = final
    bench.memory_flat = growth <= MEMORY_FLAT_TOLERANCE
    progress("  RSS %.1f MB at 50%%, %.1f MB at 100%% (%+.1f%%), peak %.1f MB"
             % (half["rss_mb"], final, 100 * growth, hwm or 0))


def memory_samples(bench, total, chunk):
    """total token-flow orders in chunks; after each, the orders created so far and the backend's RSS."""
    reqs = bench.token_requests(bench.backend_port)
    samples = [{"orders": 0, "rss_mb": bench.backend.rss(), "elapsed_s": 0.0}]
    start, done, started_at = bench.orders_done(), 0, time.monotonic()
    while done < total:
        n = min(chunk, total - done)
        res = bench.loadgen(bench.backend_port, reqs, count=n)
        bench.check_load("memory", res)
        bench.backend.check_alive()
        done = bench.orders_done() - start
        samples.append({"orders": done, "rss_mb": bench.backend.rss(),
                        "elapsed_s": time.monotonic() - started_at, "rps": res["rps"]})
        progress("  %6d / %d orders, RSS %.1f MB, %.0f orders/s" % (done, total, samples[-1]["rss_mb"], res["rps"]))
        if res["ok"] == 0:
            raise BenchError("memory phase: no order created in a chunk: %s" % res.get("status"))
    return samples


def peak_rss_mb(pid):
    """VmHWM of a process in MB (MiB), from /proc/<pid>/status; None when it has none."""
    with open("/proc/%d/status" % pid) as f:
        return next((int(line.split()[1]) / 1024.0 for line in f if line.startswith("VmHWM:")), None)
