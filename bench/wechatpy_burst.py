#!/usr/bin/env python3
"""The comparison: the same order burst done the common way, wechatpy's synchronous
WeChatPay client (order.create, JSAPI) in a 16-thread pool, straight at the simulator.

    python bench/wechatpy_burst.py SPEC.json     # prints one JSON result line

SPEC: {"sim_url", "openids": [...], "count", "threads", "notify_url", "timeout"?}.
wall = from submitting the first order to the last answer.
"""
import concurrent.futures
import json
import logging
import sys
import time
import uuid

from wechatpy.pay import WeChatPay

APPID, API_KEY, MCH_ID = "wxd930ea5d5a258f4f", "192006250b4c09247ec02edce69f6a2d", "10000100"


def main(argv):
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    logging.getLogger("urllib3").setLevel(logging.ERROR)   # "pool is full" warnings
    pay = WeChatPay(APPID, API_KEY, MCH_ID, timeout=spec.get("timeout", 30))
    pay.API_BASE_URL = spec["sim_url"].rstrip("/") + "/"
    openids = spec["openids"]
    prefix = "WP" + uuid.uuid4().hex[:12]

    def create(i):
        t0 = time.perf_counter()
        answer = pay.order.create(trade_type="JSAPI", body="Coffee", total_fee=1200,
                                  notify_url=spec["notify_url"], client_ip="127.0.0.1",
                                  user_id=openids[i % len(openids)],
                                  out_trade_no="%s%06d" % (prefix, i))
        if not answer.get("prepay_id"):
            raise RuntimeError("no prepay_id: %r" % (answer,))
        return time.perf_counter() - t0

    ok, errors, samples, lat = 0, 0, [], []
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(spec.get("threads", 16)) as pool:
        futures = [pool.submit(create, i) for i in range(spec["count"])]
        for fut in futures:
            try:
                lat.append(fut.result())
                ok += 1
            except Exception as exc:  # report, do not hide
                errors += 1
                if len(samples) < 5:
                    samples.append("%s: %s" % (type(exc).__name__, exc))
    wall = time.perf_counter() - t0
    lat.sort()
    out = {"generator": "wechatpy %s ThreadPoolExecutor(%d)" % (
        __import__("wechatpy").__version__, spec.get("threads", 16)),
        "count": spec["count"], "ok": ok, "errors": errors, "error_samples": samples,
        "wall": wall, "latency_ms": {"p50": 1000 * lat[len(lat) // 2], "max": 1000 * lat[-1]}
        if lat else {}}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
