"""The bench's table: its rows (measurement, goal, check), their figures, details and PASS/FAIL."""
import os

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
    # issue 14; goal "info": reported, not judged
    ("pg_cpu_ratio", "backend CPU per order, PostgreSQL / SQLite (token flow)",
     "<= 1.25", lambda x: x <= 1.25),
    ("pg_total_cpu_ratio", "backend + PostgreSQL server CPU per order / SQLite backend",
     "info", None),
    ("scale_ratio", "orders/s on PostgreSQL, 2 processes / 1 process (saturated)",
     "info", None),
    ("uvloop_minimal_ratio", "minimal handler CPU per request, uvloop / asyncio",
     "info", None),
    ("uvloop_backend_ratio", "backend CPU per order (token flow, SQLite), uvloop / asyncio",
     "info", None),
    ("uvloop_pg_backend_ratio", "backend CPU per order (token flow, PostgreSQL), uvloop / asyncio",
     "info", None),
]


def rows(bench):
    """Each row of ROWS with its figure and PASS (True), FAIL (False) or not judged (None)."""
    out = []
    for rid, text, goal, check in ROWS:
        fig = bench.figures.get(rid)
        if fig is None:
            ok = None
        elif rid == "memory_rss":
            ok = fig <= 100.0 and bench.memory_flat
        elif check is None:
            ok = None       # informational
        else:
            ok = bool(check(fig))
        out.append({"id": rid, "measurement": text, "figure": fig, "goal": goal, "pass": ok})
    return out


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


def _per_baseline(b, phase, key):
    return "%.0f/%.0f us" % (b.phases[phase][key], b.baseline * 1e6)


def _rounds(form, top, bottom, ratios):
    """The medians of two configurations' spreads and the ratio of each round."""
    return form % (top["median"], bottom["median"], "/".join("%.2f" % x for x in ratios))


def _loops(part, key, ratios, form="%.0f/%.0f us, rounds %s"):
    """uvloop against asyncio in the uvloop phase's figures (or in their PostgreSQL part)."""
    return _rounds(form, part[key]["uvloop"], part[key]["asyncio"], part[ratios])


# a row's detail column, from the phases' figures; a KeyError leaves it empty
DETAILS = {
    "token_cpu_ratio": lambda b: _per_baseline(b, "token", "backend_cpu_us_per_order"),
    "onecall_cpu_ratio": lambda b: _per_baseline(b, "onecall", "backend_cpu_us_per_order"),
    "notify_cpu_ratio": lambda b: _per_baseline(b, "notify", "backend_cpu_us_per_notification"),
    "sim_cpu_ratio": lambda b: "%.0f/%.0f us direct (in flow: %.0f us)" % (
        b.phases["simdirect"]["simulator_cpu_us_per_unifiedorder"],
        b.phases["simdirect"]["minimal_cpu_us_per_request"],
        b.phases.get("token", {}).get("simulator_cpu_us_per_unifiedorder", float("nan"))),
    "burst_wall": lambda b: "%d orders, runs %s" % (
        b.phases["burst"]["orders"], ", ".join("%.3f" % w for w in b.phases["burst"]["wall_s_all"])),
    "new_conns_per_1000": lambda b: "%d conns / %d calls" % (
        b.phases["token"]["new_upstream_connections"], b.phases["token"]["upstream_calls"]),
    "memory_rss": lambda b: "%d orders; %.1f MB at 50%%, %+.1f%% to 100%%" % (
        b.phases["memory"]["orders"], b.phases["memory"]["rss_half_mb"],
        100 * b.phases["memory"]["growth_second_half"]),
    "wechatpy_speedup": lambda b: "%d orders: %.2f s vs %.3f s" % (
        b.phases["wechatpy"]["count"], b.phases["wechatpy"]["wall"], b.phases["wechatpy"]["ours_wall_s"]),
    "pg_cpu_ratio": lambda b: _rounds(
        "%.0f/%.0f us, rounds %s", b.phases["pg"]["postgresql_backend_cpu_us_per_order"],
        b.phases["pg"]["sqlite_backend_cpu_us_per_order"], b.phases["pg"]["ratio_per_round"]),
    "pg_total_cpu_ratio": lambda b: "PostgreSQL server +%.0f us/order (%.0f-%.0f)" % (
        b.phases["pg"]["postgresql_server_cpu_us_per_order"]["median"],
        b.phases["pg"]["postgresql_server_cpu_us_per_order"]["min"],
        b.phases["pg"]["postgresql_server_cpu_us_per_order"]["max"]),
    "scale_ratio": lambda b: "%.0f vs %.0f orders/s, rounds %s; machine busy %.2f/%.2f of %d cores" % (
        b.phases["scale"]["orders_per_s_2_processes"]["median"],
        b.phases["scale"]["orders_per_s_1_process"]["median"],
        "/".join("%.2f" % x for x in b.phases["scale"]["ratio_per_round"]),
        b.phases["scale"]["cores_median"]["2 processes"]["machine_busy"],
        b.phases["scale"]["cores_median"]["1 process"]["machine_busy"], os.cpu_count()),
    "uvloop_minimal_ratio": lambda b: _loops(b.phases["uvloop"], "minimal_cpu_us_per_request",
                                             "minimal_ratio_per_round", "%.1f/%.1f us, rounds %s"),
    "uvloop_backend_ratio": lambda b: _loops(b.phases["uvloop"], "backend_cpu_us_per_order",
                                             "backend_ratio_per_round"),
    "uvloop_pg_backend_ratio": lambda b: _loops(b.phases["uvloop"]["postgresql"], "backend_cpu_us_per_order",
                                                "backend_ratio_per_round"),
}


def detail(row, bench):
    if row["figure"] is None:
        skipped = "skipped" in bench.phases.get(row["id"].split("_")[0], {}) or (
            row["id"] == "uvloop_pg_backend_ratio" and "uvloop" in bench.phases)
        return "skipped: no PostgreSQL server here" if skipped else ""
    try:
        return DETAILS[row["id"]](bench)
    except KeyError:
        return ""


def print_table(rows, bench):
    header = ("measurement", "figure", "detail", "goal", "result")
    table = [(r["measurement"], fmt(r["id"], r["figure"]), detail(r, bench), r["goal"],
              "-" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")) for r in rows]
    widths = [max(len(str(row[i])) for row in table + [header]) for i in range(5)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    for row in table:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print("\n" + "\n".join(lines), flush=True)
