"""The base of every WeChat endpoint: its request-log entry, the fault rules configured for its
path, and the sandbox prefixes under which each path also answers."""
import asyncio
import logging
import re

import tornado.web

from simulator.bodies import BodyLog

log = logging.getLogger("simulator")

SANDBOX_PREFIXES = ("/sandboxnew", "/xdc/apiv2sandbox")
GETSIGNKEY_XDC = "/xdc/apiv2getsignkey/sign/getsignkey"
V2_APIS = ("/pay/unifiedorder", "/pay/orderquery", "/pay/closeorder", "/pay/getsignkey",
           "/secapi/pay/refund", "/pay/refundquery", "/sns/jscode2session", "/cgi-bin/token")
# API v3: the path templates (the request log's `api`, the fault rules' `path`).
V3_APIS = ("/v3/pay/transactions/jsapi", "/v3/pay/transactions/out-trade-no/{out_trade_no}",
           "/v3/pay/transactions/id/{transaction_id}",
           "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
           "/v3/refund/domestic/refunds", "/v3/refund/domestic/refunds/{out_refund_no}",
           "/v3/certificates")
# API v3's other order kinds: Native, App and H5 (v3/kinds.py).
V3_KIND_APIS = ("/v3/pay/transactions/native", "/v3/pay/transactions/app",
                "/v3/pay/transactions/h5")
# Bills: v2's downloadbill, v3's two bill applications and their download_url (bills.py).
V2_BILL_APIS = ("/pay/downloadbill",)
V3_BILL_APIS = ("/v3/bill/tradebill", "/v3/bill/fundflowbill", "/v3/billdownload/file")
WECHAT_APIS = V2_APIS + V3_APIS + V3_KIND_APIS + V2_BILL_APIS + V3_BILL_APIS
_V3_TEMPLATES = [(re.compile("^" + re.sub(r"\{[a-z_]+\}", "[^/]+", re.escape(api)
                                          .replace(r"\{", "{").replace(r"\}", "}")) + "$"), api)
                 for api in V3_APIS + V3_KIND_APIS + V3_BILL_APIS]
FAULT_KINDS = ("latency", "status", "system_error", "malformed", "bad_sign", "drop")
# What the `malformed` fault answers: cut off mid-document, like a broken proxy.
MALFORMED_XML = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDA"
STATUS_BODY = b"<html><body><h1>%d</h1>simulated upstream failure</body></html>"


def verdict(entry):
    """One line for humans: what the simulator made of the request."""
    parts = []
    if entry.get("signature"):
        parts.append("signature " + entry["signature"])
    if entry.get("error") is not None:
        parts.append("error %s" % entry["error"])
        if entry.get("detail") and entry["detail"] != entry["error"]:
            parts.append("(%s)" % entry["detail"])
    if entry.get("faults"):
        parts.append("faults: " + ", ".join(entry["faults"]))
    return " ".join(parts) or "ok"


def v3_template(path):
    """/v3/pay/transactions/out-trade-no/T1 -> /v3/pay/transactions/out-trade-no/{out_trade_no}."""
    for pattern, api in _V3_TEMPLATES:
        if pattern.match(path):
            return api
    return None


def canonical_api(path):
    """/sandboxnew/pay/orderquery/ -> /pay/orderquery; both getsignkey paths -> /pay/getsignkey;
    a concrete /v3/ path -> its template."""
    if not isinstance(path, str):
        return None
    path = "/" + path.strip("/")
    if path in V3_APIS:
        return path
    if path.startswith("/v3/"):
        return v3_template(path) or path
    for prefix in SANDBOX_PREFIXES:
        if path.startswith(prefix + "/"):
            path = path[len(prefix):]
    return "/pay/getsignkey" if path == GETSIGNKEY_XDC else path


class WeChatEndpoint(BodyLog, tornado.web.RequestHandler):
    """One WeChat endpoint: its request-log entry and the faults configured for it.

    The entry is the request's own while it is served: the endpoint fills it in (signature,
    error, explanation) and writes its verdict, bodies and status when it finishes.
    """
    api = ""
    malformed = MALFORMED_XML

    def initialize(self, state, notifier, settlement):
        self.state, self.notifier, self.settlement = state, notifier, settlement

    def prepare(self):
        self.entry = self.state.log_request({
            "time": self.state.clock.now(), "method": self.request.method,
            "path": self.request.path, "api": self.api, "signature": None, "error": None,
            "faults": []})
        self.system_error = self.bad_sign = False

    async def apply_faults(self):
        """Latency, then drop/status/malformed answer at once (True); others set flags."""
        fired = self.state.fire_faults(self.api)
        self.entry["faults"] = [f.kind for f in fired]
        kinds = {f.kind: f for f in fired}
        delay = sum(float(f.value or 0) for f in fired if f.kind == "latency")
        if delay:
            await asyncio.sleep(delay / 1000.0)
        self.system_error = "system_error" in kinds
        self.bad_sign = "bad_sign" in kinds
        if "drop" in kinds:
            self.drop()
        elif "status" in kinds:
            self.answer_status(int(kinds["status"].value))
        elif "malformed" in kinds:
            self.finish(self.malformed)
        return self._finished

    def drop(self, error="dropped"):
        """Close the connection without a byte of answer."""
        self.request.connection.close()
        self._finished = True   # nothing may be written any more
        self.dropped = True
        self.entry["error"] = error
        self.on_finish()

    def on_finish(self):
        self.entry["verdict"] = verdict(self.entry)
        super().on_finish()

    def answer_status(self, status):
        self.set_status(status)
        self.entry["error"] = "HTTP %d" % status
        if status in (204, 304):
            return self.finish()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(STATUS_BODY % status)

    def log_exception(self, typ, value, tb):
        log.error("simulator bug in %s %s", self.request.method, self.request.path,
                  exc_info=(typ, value, tb))
