#!/usr/bin/env python3
"""The baseline: a minimal Tornado app with one JSON handler, nothing else.

    python bench/minimal_server.py --port 8100 [--event-loop asyncio|uvloop]

POST /api/orders parses a small JSON body and answers a JSON object of the same order of
size as the backend's order answer (no database, no upstream call, no logging set up).
GET /count answers how many POSTs it handled (the bench's server-side count).
--event-loop uvloop runs it on uvloop, as run_server.py --event-loop uvloop does the backend.
"""
import argparse
import asyncio
import json
import signal

import tornado.web

COUNT = [0]
PAYMENT = {"timeStamp": "1700000000", "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
           "package": "prepay_id=wx201410272009395522657a690389285100",
           "signType": "MD5", "paySign": "C380BEC2BFD727A4B6845133519F3AD6"}


class OrderHandler(tornado.web.RequestHandler):
    def post(self):
        data = json.loads(self.request.body)
        COUNT[0] += 1
        self.set_status(201)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({
            "out_trade_no": "20240101120000abcdefghijklmnopqr", "status": "NOTPAY",
            "total_fee": 1200 * int(data.get("quantity", 1)),
            "product_id": data.get("product_id"), "quantity": data.get("quantity", 1),
            "payment": PAYMENT}))


class CountHandler(tornado.web.RequestHandler):
    def get(self):
        self.finish({"count": COUNT[0]})


async def serve(port):
    app = tornado.web.Application([(r"/api/orders", OrderHandler), (r"/count", CountHandler)])
    server = app.listen(port, "127.0.0.1")
    loop = asyncio.get_running_loop()
    print("minimal Tornado JSON handler on http://127.0.0.1:%d (event loop %s.%s)"
          % (port, type(loop).__module__, type(loop).__name__), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = p.parse_args()
    factory = None
    if args.event_loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.port))


if __name__ == "__main__":
    main()
