"""The CPU phases: the minimal baseline, the token and one-call flows, the simulator row and notifications."""
import datetime
import json
import secrets
import time

from bench.common import (DEMO, BenchError, notification_xml, order_request, pay_sign_params, raw_request,
                          sign_md5, to_xml)
from bench.rig import need, progress


def phase_minimal(bench):
    p = bench.p
    progress("baseline: minimal Tornado JSON handler, %s at concurrency %d (%s)"
             % ("%d s" % p["minimal_s"] if bench.use_wrk else "%d requests" % p["minimal"],
                p["concurrency"], "wrk" if bench.use_wrk else "asyncio loadgen"))
    reqs = bench.token_requests(bench.minimal_port)   # same headers and body as an order call
    before = bench.minimal_count()
    res, cpu = bench.measure([bench.minimal],
                             lambda: bench.drive(bench.minimal_port, reqs, "rotate", p["minimal"], p["minimal_s"]))
    handled = need(bench.minimal_count() - before, "request handled", bench.minimal)
    bench.check_load("minimal", res)
    per = cpu["minimal"] / handled
    bench.baseline = per
    bench.phases["minimal"] = {"load": res, "cpu_s": cpu["minimal"], "requests_handled": handled,
                               "cpu_us_per_request": per * 1e6}
    progress("  minimal handler: %d requests, %.0f req/s, %.1f us CPU per request"
             % (handled, res["rps"], per * 1e6))


def phase_token(bench):
    p = bench.p
    progress("token flow: POST /api/orders with a Bearer token, %s at concurrency %d"
             % ("%d s" % p["token_s"] if bench.use_wrk else "%d orders" % p["token"], p["concurrency"]))
    reqs = bench.token_requests(bench.backend_port)
    o0, s0 = bench.orders_done(), bench.upstream_stats()
    res, cpu = bench.measure([bench.backend, bench.sim],
                             lambda: bench.drive(bench.backend_port, reqs, "rotate", p["token"], p["token_s"]))
    orders, s1 = need(bench.orders_done() - o0, "order created", bench.backend), bench.upstream_stats()
    bench.check_load("token", res)
    calls = need(s1["requests"] - s0["requests"], "upstream call", bench.backend)
    conns = s1["accepted"] - s0["accepted"]
    bench.phases["token"] = {
        "load": res, "orders_created": orders, "cpu_s": cpu,
        "backend_cpu_us_per_order": cpu["backend"] / orders * 1e6,
        "backend_threads": bench.last_threads,
        "upstream_calls": calls, "new_upstream_connections": conns,
        "simulator_cpu_us_per_unifiedorder": cpu["simulator"] / calls * 1e6}
    bench.figures["token_cpu_ratio"] = (cpu["backend"] / orders) / bench.baseline
    bench.phases["token"]["simulator_in_flow_ratio"] = (cpu["simulator"] / calls) / bench.baseline
    bench.figures["new_conns_per_1000"] = 1000.0 * conns / calls
    progress("  %d orders, %.0f orders/s, backend %.0f us CPU/order, simulator %.0f us CPU/call, "
             "%d new upstream connections for %d calls"
             % (orders, res["rps"], cpu["backend"] / orders * 1e6, cpu["simulator"] / calls * 1e6, conns, calls))


def phase_simdirect(bench):
    """The simulator row: its unifiedorder driven directly, at saturation.

    In the token phase the simulator only gets the backend's rate (a fraction of a core),
    so it does more loop wake-ups per call than the saturated minimal handler. Here both
    are driven by bench/loadgen.py at the same concurrency, as fast as they go, and the
    ratio compares like with like (the token phase's in-flow figure stays in the JSON)."""
    n = bench.p["token"]
    reqs = unifiedorder_requests(bench, n)
    progress("simulator: %d signed unifiedorder calls straight at the simulator, and "
             "the minimal handler again, both with bench/loadgen.py at concurrency %d" % (n, bench.p["concurrency"]))
    res, cpu = bench.measure([bench.sim], lambda: bench.loadgen(bench.sim_port, reqs))
    bench.check_load("simdirect", res)
    mres, mcpu = bench.measure([bench.minimal], lambda: bench.loadgen(
        bench.minimal_port, bench.token_requests(bench.minimal_port), count=bench.p["minimal"]))
    sim_per, min_per = cpu["simulator"] / need(res["ok"], "unifiedorder answered", bench.sim), \
        mcpu["minimal"] / need(mres["ok"], "request answered", bench.minimal)
    bench.phases["simdirect"] = {
        "unifiedorder_load": res, "simulator_cpu_us_per_unifiedorder": sim_per * 1e6,
        "minimal_load": mres, "minimal_cpu_us_per_request": min_per * 1e6,
        "ratio": sim_per / min_per,
        "note": "the table's simulator row: both saturated, same generator and concurrency. "
                "Under the backend's traffic (token phase, simulator_in_flow_ratio) the "
                "simulator runs well below saturation and costs more per call"}
    bench.figures["sim_cpu_ratio"] = sim_per / min_per
    progress("  simulator %.0f us CPU per unifiedorder at %.0f/s, minimal %.0f us at %.0f/s: %.2fx"
             % (sim_per * 1e6, res["rps"], min_per * 1e6, mres["rps"], sim_per / min_per))


def unifiedorder_requests(bench, n):
    """n signed unifiedorder calls for the simulator, each with its own out_trade_no."""
    prefix = "D" + secrets.token_hex(4)
    notify_url = "http://127.0.0.1:%d/wechat/pay/notify" % bench.backend_port
    reqs = []
    for i in range(n):
        fields = {"appid": DEMO["appid"], "mch_id": DEMO["mch_id"], "nonce_str": secrets.token_hex(16),
                  "body": "Americano", "out_trade_no": "%s%08d" % (prefix, i), "total_fee": "1200",
                  "spbill_create_ip": "127.0.0.1", "notify_url": notify_url, "trade_type": "JSAPI",
                  "openid": bench.openids[i % len(bench.openids)]}
        fields["sign"] = sign_md5(fields, DEMO["api_key"])
        reqs.append(raw_request("POST", "/pay/unifiedorder", bench.sim_port, to_xml(fields),
                                content_type="text/xml"))
    return reqs


def phase_onecall(bench):
    p = bench.p
    n = p["onecall"]
    progress("one-call flow: fetching %d single-use login codes from /sim/login (not measured)" % n)
    login_reqs = [raw_request("POST", "/sim/login", bench.sim_port,
                              json.dumps({"appid": DEMO["appid"], "user": "bench-%d" % i}),
                              content_type="application/json") for i in range(p["users"])]
    got = bench.loadgen(bench.sim_port, login_reqs, count=n, save_bodies=True)
    codes = [json.loads(b)["code"] for b in got["bodies"] if b]
    if len(codes) != n:
        raise BenchError("got %d of %d login codes" % (len(codes), n))
    reqs = [order_request(bench.backend_port, code=c) for c in codes]
    progress("one-call flow: %d POST /api/orders with the code in the body (jscode2session + "
             "unifiedorder), concurrency %d" % (n, p["concurrency"]))
    o0, s0 = bench.orders_done(), bench.upstream_stats()
    res, cpu = bench.measure([bench.backend, bench.sim],
                             lambda: bench.drive(bench.backend_port, reqs, "once", n, None, bench.orders_done))
    orders, s1 = need(bench.orders_done() - o0, "order created", bench.backend), bench.upstream_stats()
    bench.check_load("onecall", res)
    calls = s1["requests"] - s0["requests"]
    bench.phases["onecall"] = {
        "load": res, "orders_created": orders, "cpu_s": cpu,
        "backend_cpu_us_per_order": cpu["backend"] / orders * 1e6,
        "backend_threads": bench.last_threads,
        "upstream_calls": calls, "new_upstream_connections": s1["accepted"] - s0["accepted"],
        "simulator_cpu_us_per_order": cpu["simulator"] / orders * 1e6}
    bench.figures["onecall_cpu_ratio"] = (cpu["backend"] / orders) / bench.baseline
    progress("  %d orders, %.0f orders/s, backend %.0f us CPU/order, %d upstream calls, %d new connections"
             % (orders, res["rps"], cpu["backend"] / orders * 1e6, calls, s1["accepted"] - s0["accepted"]))


def unpaid_orders(bench, n, exclude=()):
    rows = bench.db("SELECT out_trade_no, openid, total_fee, prepay_id FROM orders WHERE status = 'NOTPAY'"
                    " AND prepay_id IS NOT NULL ORDER BY created_at DESC LIMIT ?", (n + len(exclude),))
    rows = [r for r in rows if r[0] not in exclude][:n]
    if len(rows) < n:
        raise BenchError("only %d unpaid orders to notify, %d needed" % (len(rows), n))
    return rows


def phase_notify(bench):
    n = bench.p["notify"]
    rows = unpaid_orders(bench, n)
    bench.notified = {r[0] for r in rows}
    time_end = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).strftime("%Y%m%d%H%M%S")
    reqs = [raw_request("POST", "/wechat/pay/notify", bench.backend_port,
                        notification_xml(no, openid, fee, "4200%024d" % i, time_end, secrets.token_hex(16)),
                        content_type="text/xml")
            for i, (no, openid, fee, _) in enumerate(rows)]
    progress("notifications: %d correctly signed payment notifications (MD5, one per unpaid order) "
             "posted by the load generator to /wechat/pay/notify, concurrency %d" % (n, bench.p["concurrency"]))
    p0 = bench.paid_count()
    res, cpu = bench.measure([bench.backend], lambda: bench.drive(bench.backend_port, reqs, "once", n, None, bench.paid_count))
    paid = need(bench.paid_count() - p0, "notification applied", bench.backend)
    bench.check_load("notify", res)
    bench.phases["notify"] = {
        "load": res, "notifications_applied": paid, "cpu_s": cpu["backend"],
        "backend_cpu_us_per_notification": cpu["backend"] / paid * 1e6,
        "backend_threads": bench.last_threads,
        "method": "signed notification XML (as the simulator's notifier builds it) posted by the "
                  "load generator over keep-alive connections; only /wechat/pay/notify runs in the "
                  "window; count = orders moved NOTPAY->SUCCESS in the database"}
    bench.figures["notify_cpu_ratio"] = (cpu["backend"] / paid) / bench.baseline
    progress("  %d notifications applied, %.0f/s, backend %.0f us CPU per notification"
             % (paid, res["rps"], cpu["backend"] / paid * 1e6))


def phase_simpay(bench):
    """Informational: notifications delivered by the simulator after /sim/pay."""
    n = bench.p["simpay"]
    rows = unpaid_orders(bench, n, exclude=getattr(bench, "notified", ()))
    ts = int(time.time())
    reqs = [raw_request("POST", "/sim/pay", bench.sim_port,
                        json.dumps(dict(pay_sign_params(prepay, ts, secrets.token_hex(16)), appid=DEMO["appid"])),
                        content_type="application/json") for (_, _, _, prepay) in rows]
    progress("notifications via the simulator (info): %d wx.requestPayment at /sim/pay, the simulator "
             "delivers each notification on a new connection" % n)
    p0 = bench.paid_count()
    before = bench.backend.cpu()
    res = bench.loadgen(bench.sim_port, reqs, concurrency=16)
    deadline = time.monotonic() + 60 + n / 20.0
    while bench.paid_count() - p0 < n and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    cpu = bench.backend.cpu() - before
    paid = bench.paid_count() - p0
    bench.check_load("simpay", res)
    bench.phases["simpay"] = {"load": res, "notifications_applied": paid, "backend_cpu_s": cpu,
                              "backend_cpu_us_per_notification": cpu / paid * 1e6 if paid else None,
                              "ratio_to_minimal": (cpu / paid) / bench.baseline if paid else None}
    progress("  %d of %d applied, backend %.0f us CPU per notification (%.2fx minimal)"
             % (paid, n, cpu / max(paid, 1) * 1e6, (cpu / max(paid, 1)) / bench.baseline))
