"""Helpers for the simulator tests: requests signed with wechatpy's signer, not the simulator's."""
import asyncio
import contextlib
import http.server
import json
import threading
import time

import tornado.web
from tornado.httpclient import HTTPRequest
from wechatpy.pay.utils import calculate_signature, calculate_signature_hmac

from simulator.v2 import wire as protocol
from simulator.config import DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, DEMO_SECRET

__all__ = ["wait_output", "stop_simulator", "Receiver", "DEMO_API_KEY", "DEMO_APPID", "DEMO_MCH_ID", "DEMO_SECRET", "ext_sign",
           "signed_xml", "order_fields", "post_xml", "call", "login", "pay_params",
           "new_order", "wait_for", "paid_order", "refund_fields", "NotifySink", "SUCCESS_REPLY"]

SUCCESS_REPLY = (b"<xml><return_code><![CDATA[SUCCESS]]></return_code>"
                 b"<return_msg><![CDATA[OK]]></return_msg></xml>")


def ext_sign(fields, key=DEMO_API_KEY, sign_type="MD5"):
    """An independent signer (wechatpy's), so the simulator's code is checked, not trusted."""
    data = {k: v for k, v in fields.items() if k != "sign"}
    if sign_type == "HMAC-SHA256":
        return calculate_signature_hmac(data, key)
    return calculate_signature(data, key)


def signed_xml(fields, key=DEMO_API_KEY, sign_type="MD5"):
    fields = dict(fields)
    if sign_type != "MD5":
        fields.setdefault("sign_type", sign_type)
    fields["sign"] = ext_sign(fields, key, sign_type)
    return protocol.to_xml(fields)


def order_fields(openid, out_trade_no="T1", **overrides):
    fields = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "n0nce",
              "body": "demo-product", "out_trade_no": out_trade_no, "total_fee": "100",
              "spbill_create_ip": "127.0.0.1", "notify_url": "http://127.0.0.1:1/notify",
              "trade_type": "JSAPI", "openid": openid}
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


async def post_xml(client, url, body, headers=None):
    """POST body (bytes, or fields to sign with MD5); returns (response, parsed dict or None)."""
    if isinstance(body, dict):
        body = signed_xml(body)
    resp = await client.fetch(HTTPRequest(url, method="POST", body=body, headers=headers or {}),
                              raise_error=False)
    try:
        return resp, protocol.parse_xml(resp.body)
    except protocol.XMLError:
        return resp, None


async def call(client, url, method="GET", body=None):
    """A control-plane call: (status, JSON)."""
    payload = None if body is None else json.dumps(body)
    if method in ("POST", "PUT") and payload is None:
        payload = ""
    resp = await client.fetch(HTTPRequest(url, method=method, body=payload), raise_error=False)
    return resp.code, json.loads(resp.body) if resp.body else None


async def login(client, base, user="alice", appid=DEMO_APPID):
    status, data = await call(client, base + "/sim/login", "POST", {"appid": appid, "user": user})
    assert status == 200, data
    return data["code"], data["openid"]


def pay_params(prepay_id, key=DEMO_API_KEY, sign_type="MD5", appid=DEMO_APPID):
    """What a backend hands to wx.requestPayment (protocol.md 5), signed independently."""
    params = {"appId": appid, "timeStamp": str(int(time.time())), "nonceStr": "abc123",
              "package": "prepay_id=" + prepay_id, "signType": sign_type}
    params["paySign"] = ext_sign(params, key, sign_type)
    del params["appId"]
    params["appid"] = appid
    return params


async def new_order(client, base, out_trade_no="T1", sign_type="MD5", prefix="",
                    key=DEMO_API_KEY, user="alice", **overrides):
    """login + unifiedorder; returns (prepay_id, openid)."""
    _, openid = await login(client, base, user)
    fields = order_fields(openid, out_trade_no, **overrides)
    resp, data = await post_xml(client, base + prefix + "/pay/unifiedorder",
                                signed_xml(fields, key, sign_type))
    assert data["result_code"] == "SUCCESS", data
    return data["prepay_id"], openid


async def wait_for(predicate, timeout=5.0, interval=0.01):
    """Poll predicate() on the IOLoop until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return False


async def paid_order(client, base, out_trade_no="P1", sign_type="MD5", prefix="",
                     key=DEMO_API_KEY, user="alice", **overrides):
    """login + unifiedorder + /sim/pay SUCCESS; returns (transaction_id, openid)."""
    prepay_id, openid = await new_order(client, base, out_trade_no, sign_type, prefix, key,
                                        user, **overrides)
    status, data = await call(client, base + "/sim/pay", "POST",
                              pay_params(prepay_id, key, sign_type))
    assert status == 200, data
    return data["transaction_id"], openid


def refund_fields(out_refund_no="R1", refund_fee="30", total_fee="100", out_trade_no="P1",
                  **overrides):
    """A refund request's fields (protocol.md 7), unsigned; None values are left out."""
    fields = {"appid": DEMO_APPID, "mch_id": DEMO_MCH_ID, "nonce_str": "r3fund",
              "out_trade_no": out_trade_no, "out_refund_no": out_refund_no,
              "total_fee": total_fee, "refund_fee": refund_fee}
    fields.update(overrides)
    return {k: str(v) for k, v in fields.items() if v is not None}


def wait_output(proc, text, timeout=10):
    """Wait until a tests.processes.Proc has printed text; its whole output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.output():
            return proc.output()
        time.sleep(0.05)
    raise AssertionError("%r not in output:\n%s" % (text, proc.output()))


class NotifySink:
    """A notify_url in a thread, for tests against a simulator process: records each request
    ((headers, body) in `received`, the body alone in `bodies`) and answers it with answer():
    here replies.pop(0), else SUCCESS."""

    def __init__(self):
        self.bodies, self.replies, self.received = [], [], []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                sink.keep(dict(self.headers.items()), self.rfile.read(length))
                sink.answer(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/notify" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def keep(self, headers, body):
        self.bodies.append(body)
        self.received.append((headers, body))

    def answer(self, handler):
        reply = self.replies.pop(0) if self.replies else SUCCESS_REPLY
        handler.send_response(200)
        handler.send_header("Content-Type", "text/xml")
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    def wait(self, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.bodies) < count:
            time.sleep(0.02)
        return len(self.bodies) >= count

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def simulator_process(ready_text, *args):
    """A real `run_simulator.py --time-scale 0.001 [args]`, once it has printed ready_text."""
    from tests.support.processes import Proc, free_port
    port = free_port()
    with Proc("run_simulator.py", ["--port", str(port), "--time-scale", "0.001", *args], port=port) as proc:
        wait_output(proc, ready_text)
        yield proc


@contextlib.contextmanager
def tls_simulator(directory):
    """A real `run_simulator.py --tls` with its CA in directory; .url and .files (tls.prepare)."""
    from simulator import tls
    with simulator_process("WECHAT_KEY_FILE", "--tls", "--tls-dir", directory) as proc:
        proc.url = "https://127.0.0.1:%d" % proc.port
        proc.files = tls.prepare(directory)      # reuses what the process created
        yield proc


def stop_simulator(application, io_loop):
    """Stop an in-process simulator for good, and let the attempts it cancelled finish on the
    test's loop (a task left cancelling when the loop closes is reported as destroyed)."""
    import asyncio
    application.shutdown()
    io_loop.run_sync(lambda: asyncio.sleep(0.01))


class Receiver(tornado.web.RequestHandler):
    """The merchant's notify_url in an in-process test: records the raw bodies, answers SUCCESS."""

    def initialize(self, received):
        self.received = received

    def post(self):
        self.received.append(self.request.body)
        self.finish(SUCCESS_REPLY)
