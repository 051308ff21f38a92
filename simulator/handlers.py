"""Handlers: one pipeline per WeChat endpoint, and the JSON control plane under /sim/."""
import asyncio
import dataclasses
import json
import logging
import math
import re
import secrets

import tornado.iostream
import tornado.web

from simulator import protocol
from simulator.notifier import FORGED, MODES
from simulator.refunds import REFUND_FORGED, REFUND_MODES
from simulator.state import (CODE_TTL, DES, REFUND_OUTCOMES, REFUND_PAGE, REFUND_STATUSES,
                             TRADE_STATE_DESC, LoginError, PayError, ProtocolFail, beijing)

log = logging.getLogger("simulator")

# return_msg of return_code=FAIL answers, as WeChat words them.
SIGN_ERROR = "签名错误"
LACK_PARAMS = "缺少参数"
XML_FORMAT_ERROR = "XML格式错误"
NOT_UTF8 = "编码格式错误"
REQUIRE_POST = "请使用post方法"
POST_DATA_EMPTY = "post数据为空"
BODY_TOO_LARGE = "请求数据过大"
SIGN_TYPE_ERROR = "sign_type参数错误"
NONCE_TOO_LONG = "nonce_str参数长度有误"
SYSTEM_BUSY = "系统繁忙,请稍后再试"
# What the `malformed` fault answers: cut off mid-document, like a broken proxy.
MALFORMED_XML = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDA"
MALFORMED_JSON = b'{"session_key":"tiihtNczf5v6AKRyjwEUhQ==","openid":"oUpF8uMu'
STATUS_BODY = b"<html><body><h1>%d</h1>simulated upstream failure</body></html>"
MAX_BODY = 1 << 20
SANDBOX_PREFIXES = ("/sandboxnew", "/xdc/apiv2sandbox")
GETSIGNKEY_XDC = "/xdc/apiv2getsignkey/sign/getsignkey"
WECHAT_APIS = ("/pay/unifiedorder", "/pay/orderquery", "/pay/closeorder", "/pay/getsignkey",
               "/secapi/pay/refund", "/pay/refundquery", "/sns/jscode2session", "/cgi-bin/token")
# /secapi/ without the merchant's client certificate: WeChat does not answer at all, it closes
# the connection (SDK users report "failed to respond" / "not enough data" until they
# configure apiclient_cert.pem, e.g. egzosn/pay-java-parent#24, befinal/node-tenpay#77).
NO_CLIENT_CERT = "NO_CLIENT_CERT"
NO_CLIENT_CERT_DETAIL = ("/secapi/ needs the merchant's client certificate (apiclient_cert.pem "
                         "and apiclient_key.pem; here the simulator's merchant.pem and "
                         "merchant-key.pem, issued by its CA): WeChat closes the connection "
                         "without an answer")
FAULT_KINDS = ("latency", "status", "system_error", "malformed", "bad_sign", "drop")
PAY_RESULTS = ("SUCCESS", "CANCEL", "FAIL", "USERPAYING")
NEGATIVE_TEST = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
FORCED_ERRCODE = re.compile(r"^errcode-(-?[0-9]{1,9})$")
LOGIN_ERRMSG = {-1: "system error", 40029: "invalid code", 40163: "code been used",
                40226: "high risk user", 45011: "api minute-quota reach limit mustslower "
                "retry next minute"}


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


def rid():
    """WeChat appends a request id to every errmsg."""
    return "%s-%s-%s" % (secrets.token_hex(4), secrets.token_hex(4), secrets.token_hex(4))


class WeChatHandler(tornado.web.RequestHandler):
    """One WeChat endpoint: its request-log entry and the faults configured for it."""
    api = ""
    malformed = MALFORMED_XML

    def initialize(self, state, notifier):
        self.state, self.notifier = state, notifier

    def prepare(self):
        self.entry = {"time": self.state.clock.now(), "method": self.request.method,
                      "path": self.request.path, "api": self.api, "signature": None,
                      "error": None, "faults": []}
        self.state.requests.append(self.entry)
        self.state.stats["wechat_requests"] += 1
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
        self.entry["error"] = error
        self.on_finish()

    def on_finish(self):
        self.entry["verdict"] = verdict(self.entry)

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


class PayHandler(WeChatHandler):
    """parse -> required fields -> signature -> appid -> scenarios -> rules -> signed answer."""
    required = ("appid", "mch_id", "nonce_str", "sign")
    sandbox = False
    needs_client_cert = False   # /secapi/: the merchant's client certificate, over TLS
    client_cn = None            # the CN of a verified client certificate

    def get(self, prefix=None):
        self.fail(ProtocolFail(REQUIRE_POST))

    async def post(self, prefix=None):
        self.sandbox = prefix is not None
        self.msg, self.merchant, self.sign_type = {}, None, protocol.MD5
        if self.needs_client_cert and not self.check_client_cert():
            return
        if await self.apply_faults():
            return
        try:
            msg = self.parse()
            self.require(msg)
            self.check_signature(msg)
            self.check_appid(msg)
            self.check_scenarios()
            self.answer(self.rules(msg))
        except ProtocolFail as exc:
            self.fail(exc)
        except PayError as exc:
            self.business_fail(exc)

    def check_client_cert(self):
        """TLS comes first at WeChat: without a verified client certificate, no answer.

        The application setting sim_client_certs decides: None (default) requires one on
        requests that came over TLS and lets plain HTTP through (quick local runs); True
        requires one always; False never.
        """
        tls = isinstance(getattr(self.request.connection, "stream", None),
                         tornado.iostream.SSLIOStream)
        mode = self.settings.get("sim_client_certs")
        required = tls if mode is None else bool(mode)
        cert = self.request.get_ssl_certificate() if tls else None
        if cert:
            self.client_cn = common_name(cert)
            self.entry["client_cert"] = "CN=%s" % self.client_cn
        else:
            self.entry["client_cert"] = "none" if tls else "none (plain HTTP)"
        if required and not cert:
            self.entry["detail"] = NO_CLIENT_CERT_DETAIL
            self.drop(NO_CLIENT_CERT)
            return False
        return True

    def parse(self):
        body = self.request.body
        if len(body) > MAX_BODY:
            raise ProtocolFail(BODY_TOO_LARGE, "body over %d bytes" % MAX_BODY)
        if not body.strip():
            raise ProtocolFail(POST_DATA_EMPTY)
        try:
            self.msg = protocol.parse_xml(body)
        except protocol.XMLError as exc:
            return_msg = NOT_UTF8 if exc.not_utf8 else XML_FORMAT_ERROR
            raise ProtocolFail(return_msg, exc.reason) from None
        return self.msg

    def require(self, msg):
        missing = [name for name in self.required_fields(msg) if not msg.get(name)]
        if missing:
            raise ProtocolFail(LACK_PARAMS, "missing: " + ", ".join(missing))
        if len(msg["nonce_str"]) > 32:
            raise ProtocolFail(NONCE_TOO_LONG, "nonce_str is longer than 32 characters")
        self.sign_type = msg.get("sign_type") or protocol.MD5
        if self.sign_type not in protocol.SIGN_TYPES:
            raise ProtocolFail(SIGN_TYPE_ERROR, "sign_type must be MD5 or HMAC-SHA256")

    def required_fields(self, msg):
        return self.required

    def check_signature(self, msg):
        self.merchant = self.state.config.merchants.get(msg["mch_id"])
        if self.merchant is None:
            raise PayError("MCHID_NOT_EXIST")
        key = self.signing_key()
        if protocol.verify(msg, key, self.sign_type):
            self.entry["signature"] = "ok"
            return
        self.entry["signature"] = "bad"
        self.entry["explanation"] = protocol.explain_signature_failure(
            msg, key, self.sign_type, self.wrong_keys(msg))
        raise ProtocolFail(SIGN_ERROR, "the sign does not match; see explanation")

    def signing_key(self):
        return self.merchant.key(self.sandbox)

    def wrong_keys(self, msg):
        """Keys a developer may have signed with by mistake, for the explanation."""
        keys = [("the AppSecret of %s (use the merchant API key)" % app.appid, app.secret)
                for app in self.state.config.apps.values()
                if app.appid in self.merchant.appids or app.appid == msg.get("appid")]
        if self.sandbox:
            keys.append(("the real API key (sandbox paths need the sandbox_signkey "
                         "from getsignkey)", self.merchant.api_key))
        else:
            keys.append(("the sandbox_signkey (this is not a sandbox path)",
                         self.merchant.sandbox_key))
        return keys

    def check_appid(self, msg):
        appid = msg.get("appid")
        if appid not in self.state.config.apps:
            raise PayError("APPID_NOT_EXIST")
        if appid not in self.merchant.appids:
            raise PayError("APPID_MCHID_NOT_MATCH")

    def check_scenarios(self):
        case = self.request.headers.get("Wechatpay-Negative-Test", "").strip()
        if NEGATIVE_TEST.match(case):
            self.entry["negative_test"] = case
            raise PayError(case, DES.get(case, "Wechatpay-Negative-Test: " + case))
        if self.system_error:
            raise PayError("SYSTEMERROR")

    def rules(self, msg):
        raise NotImplementedError

    def answer(self, fields):
        out = {"return_code": "SUCCESS", "return_msg": "OK"}
        out.update(self.echo())
        out.update({"result_code": "SUCCESS"}, **fields)
        self.write_xml(self.signed(out))

    def echo(self):
        """appid, mch_id, nonce_str (and device_info): some SDKs build paySign from them."""
        out = {k: self.msg[k] for k in ("appid", "mch_id", "device_info") if self.msg.get(k)}
        out["nonce_str"] = protocol.nonce()
        return out

    def signed(self, out):
        if self.merchant is None:
            return out      # an unknown mch_id has no key to sign with
        key = protocol.nonce() if self.bad_sign else self.signing_key()
        out["sign"] = protocol.sign(out, key, self.sign_type)
        return out

    def fail(self, exc):
        self.entry.update(error=exc.return_msg, detail=exc.detail, return_code="FAIL")
        self.write_xml({"return_code": "FAIL", "return_msg": exc.return_msg})

    def business_fail(self, exc):
        self.entry.update(error=exc.err_code, detail=exc.err_code_des, result_code="FAIL")
        out = {"return_code": "SUCCESS", "return_msg": "OK"}
        out.update(self.echo())
        out.update(result_code="FAIL", err_code=exc.err_code, err_code_des=exc.err_code_des)
        self.write_xml(self.signed(out))

    def write_xml(self, fields):
        self.set_header("Content-Type", "text/xml; charset=utf-8")
        self.finish(protocol.to_xml(fields))

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", "text/xml; charset=utf-8")
        self.finish(protocol.to_xml({"return_code": "FAIL", "return_msg": SYSTEM_BUSY}))


class UnifiedOrderHandler(PayHandler):
    api = "/pay/unifiedorder"
    required = PayHandler.required + ("body", "out_trade_no", "total_fee", "spbill_create_ip",
                                      "notify_url", "trade_type")

    def required_fields(self, msg):
        # openid identifies the payer of a Mini Program (JSAPI) payment.
        extra = ("openid",) if msg.get("trade_type") == "JSAPI" else ()
        return self.required + extra

    def rules(self, msg):
        order = self.state.unified_order(self.merchant, msg, self.sandbox)
        out = {"trade_type": msg["trade_type"], "prepay_id": order.prepay_id}
        if msg["trade_type"] == "NATIVE":
            out["code_url"] = "weixin://wxpay/bizpayurl?pr=" + order.prepay_id[-7:]
        return out


class OrderQueryHandler(PayHandler):
    api = "/pay/orderquery"

    def required_fields(self, msg):
        if not (msg.get("transaction_id") or msg.get("out_trade_no")):
            return self.required + ("out_trade_no",)
        return self.required

    def rules(self, msg):
        order = self.state.find_order(msg["mch_id"], msg.get("out_trade_no", ""),
                                      msg.get("transaction_id", ""))
        if order is None or order.appid != msg["appid"]:
            raise PayError("ORDERNOTEXIST")
        return query_fields(order)


def query_fields(order):
    out = {"out_trade_no": order.out_trade_no, "trade_state": order.trade_state,
           "trade_state_desc": TRADE_STATE_DESC[order.trade_state],
           "trade_type": order.fields["trade_type"], "total_fee": str(order.total_fee),
           "fee_type": order.fields.get("fee_type") or "CNY"}
    if order.fields.get("attach"):
        out["attach"] = order.fields["attach"]
    if order.transaction_id:
        out.update(openid=order.openid, is_subscribe="N", bank_type=order.bank_type,
                   cash_fee=str(order.total_fee), transaction_id=order.transaction_id,
                   time_end=order.time_end)
    return out


class CloseOrderHandler(PayHandler):
    api = "/pay/closeorder"
    required = PayHandler.required + ("out_trade_no",)

    def rules(self, msg):
        order = self.state.find_order(msg["mch_id"], msg["out_trade_no"])
        if order is None or order.appid != msg["appid"]:
            raise PayError("ORDERNOTEXIST")
        self.state.close_order(order)
        return {"result_msg": "OK"}


def common_name(cert):
    """The subject CN of ssl.getpeercert()'s dict."""
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return ""


class RefundHandler(PayHandler):
    """POST /secapi/pay/refund: accepted means PROCESSING; it settles after the refund delay."""
    api = "/secapi/pay/refund"
    needs_client_cert = True
    required = PayHandler.required + ("out_refund_no", "total_fee", "refund_fee")

    def required_fields(self, msg):
        if not (msg.get("transaction_id") or msg.get("out_trade_no")):
            return self.required + ("out_trade_no",)
        return self.required

    def check_appid(self, msg):
        super().check_appid(msg)
        # A certificate of the simulator's CA, but another merchant's (CN = mch_id).
        if self.client_cn is not None and self.client_cn != msg["mch_id"]:
            self.entry["explanation"] = {"hints": [
                "the client certificate is merchant %s's (CN=%s), the request is for mch_id %s"
                % (self.client_cn, self.client_cn, msg["mch_id"])]}
            raise PayError("CERT_ERROR")

    def rules(self, msg):
        refund, repeated = self.state.refund(self.merchant, msg, self.sandbox)
        self.entry.update(out_refund_no=refund.out_refund_no, repeated=repeated)
        if not repeated:
            self.notifier.schedule_settlement(refund)
        return {"transaction_id": refund.transaction_id, "out_trade_no": refund.out_trade_no,
                "out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id,
                "refund_channel": "", "refund_fee": str(refund.refund_fee),
                "total_fee": str(refund.total_fee), "cash_fee": str(refund.total_fee),
                "cash_refund_fee": str(refund.refund_fee), "coupon_refund_fee": "0",
                "coupon_refund_count": "0"}


class RefundQueryHandler(PayHandler):
    """POST /pay/refundquery: refund_id > out_refund_no > transaction_id > out_trade_no."""
    api = "/pay/refundquery"
    keys = ("refund_id", "out_refund_no", "transaction_id", "out_trade_no")

    def required_fields(self, msg):
        if not any(msg.get(k) for k in self.keys):
            return self.required + ("out_trade_no",)
        return self.required

    def rules(self, msg):
        self.notifier.settle_due()
        order, refunds = self.state.query_refunds(msg["mch_id"], msg["appid"], msg)
        offset = msg.get("offset", "")
        if offset and (not offset.isdigit() or int(offset) >= len(refunds)):
            raise PayError("PARAM_ERROR", DES["OFFSET"])
        start = int(offset or 0)
        page = refunds[start:start + REFUND_PAGE]
        out = {"transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no,
               "total_fee": str(order.total_fee), "cash_fee": str(order.total_fee),
               "fee_type": order.fields.get("fee_type") or "CNY",
               "refund_count": str(len(page)), "total_refund_count": str(len(order.refunds))}
        if offset:
            out["offset"] = offset
        for n, refund in enumerate(page):
            out.update(refund_query_fields(refund, n))
        return out


def refund_query_fields(refund, n):
    out = {"out_refund_no_%d" % n: refund.out_refund_no, "refund_id_%d" % n: refund.refund_id,
           "refund_channel_%d" % n: refund.refund_channel,
           "refund_fee_%d" % n: str(refund.refund_fee),
           "settlement_refund_fee_%d" % n: str(refund.refund_fee),
           "refund_status_%d" % n: refund.refund_status,
           "refund_account_%d" % n: refund.refund_account,
           "refund_recv_accout_%d" % n: refund.refund_recv_accout}
    if refund.success_time:
        out["refund_success_time_%d" % n] = refund.success_time
    return out


class GetSignKeyHandler(PayHandler):
    """The sandbox key, requested with the real API key (MD5) and answered unsigned."""
    api = "/pay/getsignkey"
    required = ("mch_id", "nonce_str", "sign")

    def signing_key(self):
        return self.merchant.api_key

    def check_appid(self, msg):
        pass    # getsignkey carries no appid

    def rules(self, msg):
        return {"sandbox_signkey": self.merchant.sandbox_key}

    def answer(self, fields):
        # Tencent's answer has no sign: WxJava would check it with the wrong key otherwise.
        out = {"return_code": "SUCCESS", "return_msg": "ok", "mch_id": self.merchant.mch_id}
        self.write_xml(dict(out, **fields))


class JSONApiHandler(WeChatHandler):
    """Login-side WeChat APIs: query parameters in, JSON out, HTTP 200 even on errors."""
    malformed = MALFORMED_JSON
    content_type = "application/json; encoding=utf-8"

    async def get(self, prefix=None):
        if await self.apply_faults():
            return
        try:
            self.answer(self.rules())
        except LoginError as exc:
            self.entry["error"] = exc.errcode
            self.answer({"errcode": exc.errcode, "errmsg": "%s, rid: %s" % (exc.errmsg, rid())})

    post = get

    def param(self, name):
        return self.get_argument(name, "").strip()

    def answer(self, data):
        self.set_header("Content-Type", self.content_type)
        self.finish(json.dumps(data, ensure_ascii=False))

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", self.content_type)
        self.finish(json.dumps({"errcode": -1, "errmsg": "system error, rid: " + rid()}))


class Code2SessionHandler(JSONApiHandler):
    api = "/sns/jscode2session"
    # Real jscode2session answers JSON labelled text/plain (Spring's RestTemplate trips on it).
    content_type = "text/plain"

    def rules(self):
        appid, secret, js_code = self.param("appid"), self.param("secret"), self.param("js_code")
        require_login_params(appid, secret, js_code)
        self.state.check_app(appid, secret)
        forced = FORCED_ERRCODE.match(js_code)
        if forced:
            errcode = int(forced.group(1))
            raise LoginError(errcode, LOGIN_ERRMSG.get(errcode, "forced by js_code " + js_code))
        if self.system_error:
            raise LoginError(-1, LOGIN_ERRMSG[-1])
        # An access_token parameter (wechatpy, WxJava add one) is ignored, as at WeChat.
        return self.state.exchange_code(appid, js_code)


def require_login_params(appid, secret, js_code):
    if not appid:
        raise LoginError(41002, "appid missing")
    if not secret:
        raise LoginError(41004, "appsecret missing")
    if not js_code:
        raise LoginError(41008, "missing code")


class TokenHandler(JSONApiHandler):
    api = "/cgi-bin/token"

    def rules(self):
        appid, secret = self.param("appid"), self.param("secret")
        if self.param("grant_type") != "client_credential":
            raise LoginError(40002, "invalid grant_type")
        require_login_params(appid, secret, "-")
        self.state.check_app(appid, secret)
        if self.system_error:
            raise LoginError(-1, LOGIN_ERRMSG[-1])
        return {"access_token": secrets.token_urlsafe(96), "expires_in": 7200}


class NotFoundHandler(tornado.web.RequestHandler):
    def prepare(self):
        self.set_status(404)
        self.finish({"error": {"code": "NOT_FOUND",
                               "message": "no such path: %s" % self.request.path}})


class SimError(tornado.web.HTTPError):
    """A control-plane error, answered as JSON {"error": {"code", "message"}}."""

    def __init__(self, status, code, message):
        super().__init__(status)
        self.code, self.message = code, message


class SimHandler(tornado.web.RequestHandler):
    """The /sim/ control plane: JSON in and out, 4xx JSON for bad input, never a traceback."""

    def initialize(self, state, notifier):
        self.state, self.notifier = state, notifier

    def json_body(self):
        if not self.request.body.strip():
            return {}
        try:
            data = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise SimError(400, "BAD_JSON", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise SimError(400, "BAD_JSON", "the body must be a JSON object")
        return data

    def reply(self, data, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data, ensure_ascii=False))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, SimError):
            error = {"code": exc.code, "message": exc.message}
        elif status_code < 500:
            error = {"code": "HTTP_%d" % status_code, "message": self._reason}
        else:
            error = {"code": "INTERNAL", "message": "simulator error (see its log)"}
        self.reply({"error": error}, status_code)

    def log_exception(self, typ, value, tb):
        if not isinstance(value, tornado.web.HTTPError):
            log.error("simulator bug in %s %s", self.request.method, self.request.path,
                      exc_info=(typ, value, tb))

    def default_appid(self, data):
        """appid from the body; optional when exactly one app is configured."""
        apps = self.state.config.apps
        appid = data.get("appid")
        if appid is None and len(apps) == 1:
            return next(iter(apps))
        if not isinstance(appid, str) or appid not in apps:
            raise SimError(400, "UNKNOWN_APPID", "appid must be one of: " + ", ".join(apps))
        return appid

    def order_named(self, out_trade_no):
        return self.one_of_merchant(self.state.orders_named(out_trade_no), "ORDER_NOT_FOUND",
                                    "order", out_trade_no)

    def refund_named(self, out_refund_no):
        return self.one_of_merchant(self.state.refunds_named(out_refund_no), "REFUND_NOT_FOUND",
                                    "refund", out_refund_no)

    def one_of_merchant(self, items, missing_code, kind, name):
        """The one item by that name, narrowed by ?mch_id= when several merchants use it."""
        mch_id = self.get_query_argument("mch_id", None)
        if mch_id is not None:
            items = [i for i in items if i.mch_id == mch_id]
        if not items:
            raise SimError(404, missing_code, "no %s %s" % (kind, name))
        if len(items) > 1:
            raise SimError(409, "AMBIGUOUS", "several merchants have %s %s: add ?mch_id=" % (kind, name))
        return items[0]

def number(data, name, default=None, low=None, high=None):
    """A finite JSON number within [low, high]; SimError otherwise."""
    value = data.get(name, default)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (low is None or value >= low)
          and (high is None or value <= high))
    if not ok:
        raise SimError(400, "BAD_FIELD", "%s must be a number between %s and %s"
                       % (name, low, high))
    return value


class SimLoginHandler(SimHandler):
    """POST /sim/login: plays wx.login."""

    def post(self):
        data = self.json_body()
        appid = self.default_appid(data)
        user = data.get("user", "default")
        if isinstance(user, bool) or not isinstance(user, (str, int)) or str(user) == "":
            raise SimError(400, "BAD_FIELD", "user must be a non-empty string")
        login = self.state.issue_code(appid, str(user))
        self.reply({"code": login.code, "openid": login.openid,
                    "expires_in": self.state.clock.scaled(CODE_TTL)})


class PaymentFail(Exception):
    def __init__(self, status, err_msg):
        super().__init__(err_msg)
        self.status, self.err_msg = status, err_msg


class SimPayHandler(SimHandler):
    """POST /sim/pay: plays wx.requestPayment, checking paySign as WeChat's client does."""
    fields = ("timeStamp", "nonceStr", "package", "signType", "paySign")

    def post(self):
        data = self.json_body()
        self.entry = {"time": self.state.clock.now(), "method": "POST", "path": "/sim/pay",
                      "api": "wx.requestPayment", "signature": None, "error": None}
        self.state.requests.append(self.entry)
        try:
            order = self.checked_order(data)
            self.reply(self.settle(order, data.get("result") or "SUCCESS"))
        except PaymentFail as exc:
            self.entry["error"] = exc.err_msg
            self.reply({"errMsg": exc.err_msg}, exc.status)

    def on_finish(self):
        if hasattr(self, "entry"):
            self.entry["verdict"] = verdict(self.entry)

    def checked_order(self, data):
        for name in self.fields:
            if not isinstance(data.get(name), str):
                raise PaymentFail(400, "requestPayment:fail parameter error: parameter.%s "
                                  "should be String instead of %s;"
                                  % (name, js_type(data.get(name))))
        if data.get("result", "SUCCESS") not in PAY_RESULTS:
            raise PaymentFail(400, "requestPayment:fail result must be one of "
                              + ", ".join(PAY_RESULTS))
        appid = self.default_appid(data)
        order = self.live_order(appid, data["package"])
        self.check_pay_sign(order, data, appid)
        if order.paid:
            raise PaymentFail(409, "requestPayment:fail 该订单已支付")
        if order.trade_state == "CLOSED":
            raise PaymentFail(409, "requestPayment:fail 该订单已关闭")
        return order

    def live_order(self, appid, package):
        prepay_id = package[len("prepay_id="):] if package.startswith("prepay_id=") else ""
        order = self.state.by_prepay.get(prepay_id)
        if order is None or order.appid != appid or order.prepay_id != prepay_id:
            raise PaymentFail(400, "requestPayment:fail prepay_id invalid: package must be "
                              "prepay_id=<a prepay_id of this appid>")
        if self.state.prepay_expired(order):
            raise PaymentFail(400, "requestPayment:fail prepay_id expired (2 hours)")
        time_expire = order.fields.get("time_expire")
        if time_expire and beijing(self.state.clock.now()) >= time_expire:
            raise PaymentFail(400, "requestPayment:fail order expired at time_expire "
                              + time_expire)
        return order

    def check_pay_sign(self, order, data, appid):
        merchant = self.state.config.merchants[order.mch_id]
        key = merchant.key(order.sandbox)
        params = {"appId": appid, "sign": data["paySign"]}
        params.update({k: data[k] for k in self.fields if k != "paySign"})
        same_type = data["signType"] == order.sign_type
        if same_type and protocol.verify(params, key, order.sign_type):
            self.entry["signature"] = "ok"
            return
        self.entry["signature"] = "bad"
        self.entry["explanation"] = self.explain(params, key, order, merchant)
        raise PaymentFail(400, "requestPayment:fail 支付验证签名失败")

    def explain(self, params, key, order, merchant):
        sign_type = params["signType"]
        if sign_type not in protocol.SIGN_TYPES:
            sign_type = order.sign_type
        secret = self.state.config.apps[order.appid].secret
        wrong = [("the AppSecret (use the merchant API key)", secret),
                 ("the other environment's key", merchant.key(not order.sandbox))]
        explanation = protocol.explain_signature_failure(params, key, sign_type, wrong)
        if params["signType"] != order.sign_type:
            explanation["hints"].insert(0, "signType is %s but unifiedorder used %s: they must be "
                                        "equal" % (params["signType"], order.sign_type))
        for label, variant in paysign_variants(params):
            if protocol.sign(variant, key, sign_type) == params["sign"]:
                explanation["hints"].insert(0, "the sign matches when " + label)
        if len(explanation["hints"]) > 1 and protocol.NO_MATCH_HINT in explanation["hints"]:
            explanation["hints"].remove(protocol.NO_MATCH_HINT)
        return explanation

    def settle(self, order, result):
        if result == "CANCEL":
            raise PaymentFail(400, "requestPayment:fail cancel")
        if result == "FAIL":
            order.trade_state = "PAYERROR"
            raise PaymentFail(400, "requestPayment:fail simulated payment failure (PAYERROR)")
        if result == "USERPAYING":
            order.trade_state = "USERPAYING"
            return {"errMsg": "requestPayment:pending", "trade_state": "USERPAYING"}
        self.state.mark_paid(order)
        self.notifier.start(order)
        return {"errMsg": "requestPayment:ok", "transaction_id": order.transaction_id,
                "out_trade_no": order.out_trade_no}


def js_type(value):
    """How wx.requestPayment names a parameter's type in its error."""
    if value is None:
        return "Undefined"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, (int, float)):
        return "Number"
    return {list: "Array", dict: "Object"}.get(type(value), "String")


def paysign_variants(params):
    """paySign mistakes seen in the wild: lowercase appid/timestamp/noncestr."""
    renames = {"appId": "appid", "timeStamp": "timestamp", "nonceStr": "noncestr"}
    for old, new in renames.items():
        variant = dict(params)
        variant[new] = variant.pop(old)
        yield "%s is written %s (paySign signs %s)" % (old, new, old), variant


class SimOrdersHandler(SimHandler):
    def get(self):
        self.notifier.settle_due()
        self.reply({"orders": [o.to_json() for o in self.state.orders.values()]})


class SimOrderHandler(SimHandler):
    def get(self, out_trade_no):
        self.notifier.settle_due()
        self.reply(self.order_named(out_trade_no).to_json())


def refund_status(data, allowed):
    status = data.get("status")
    if status not in allowed:
        raise SimError(400, "BAD_FIELD", "status must be one of " + ", ".join(allowed))
    return status


class SimRefundOutcomeHandler(SimHandler):
    """POST /sim/orders/<no>/refund-outcome {"status"}: how the order's next refund ends."""

    def post(self, out_trade_no):
        status = refund_status(self.json_body(), REFUND_OUTCOMES)
        order = self.order_named(out_trade_no)
        order.refund_outcome = "" if status == "SUCCESS" else status
        self.reply({"out_trade_no": order.out_trade_no, "mch_id": order.mch_id,
                    "next_refund_outcome": status})


class SimRefundsHandler(SimHandler):
    """GET /sim/refunds[?out_trade_no=&mch_id=&status=]: every refund the simulator holds."""

    def get(self):
        self.notifier.settle_due()
        filters = {k: self.get_query_argument(k, None)
                   for k in ("out_trade_no", "mch_id", "refund_status")}
        filters["refund_status"] = self.get_query_argument("status", None)
        if filters["refund_status"] not in (None,) + REFUND_STATUSES:
            raise SimError(400, "BAD_FIELD", "status must be one of " + ", ".join(REFUND_STATUSES))
        refunds = [r.to_json() for r in self.state.refunds.values()]
        refunds = [r for r in refunds if all(v is None or r[k] == v for k, v in filters.items())]
        self.reply({"refunds": refunds, "refund_delay": self.state.refund_delay,
                    "refund_delay_scaled": self.state.clock.scaled(self.state.refund_delay)})


class SimRefundHandler(SimHandler):
    """GET /sim/refunds/<out_refund_no>; POST {"status"} settles a PROCESSING refund now."""

    def get(self, out_refund_no):
        self.notifier.settle_due()
        self.reply(self.refund_named(out_refund_no).to_json())

    def post(self, out_refund_no):
        status = refund_status(self.json_body(), REFUND_OUTCOMES)
        self.notifier.settle_due()
        refund = self.refund_named(out_refund_no)
        if refund.refund_status != "PROCESSING":
            raise SimError(409, "ALREADY_SETTLED", "refund %s is already %s"
                           % (out_refund_no, refund.refund_status))
        self.notifier.settle(refund, status)
        self.reply(refund.to_json())


class SimRefundNotifyHandler(SimHandler):
    """POST /sim/refunds/<out_refund_no>/notify {"mode"?, "count"?}: resend (or forge)."""

    async def post(self, out_refund_no):
        data = self.json_body()
        mode = data.get("mode") or "normal"
        if mode not in REFUND_MODES:
            raise SimError(400, "BAD_FIELD", "mode must be one of " + ", ".join(REFUND_MODES))
        count = number(data, "count", 5, 1, 50)
        self.notifier.settle_due()
        refund = self.refund_named(out_refund_no)
        if refund.refund_status == "PROCESSING" and mode not in REFUND_FORGED:
            raise SimError(409, "NOT_SETTLED", "refund %s is PROCESSING: settle it first (POST "
                           "/sim/refunds/%s {\"status\"})" % (out_refund_no, out_refund_no))
        if not refund.notify_url:
            raise SimError(409, "NO_NOTIFY_URL", "refund %s was requested without notify_url"
                           % out_refund_no)
        attempts = await self.notifier.resend_refund(refund, mode, int(count))
        self.reply({"attempts": attempts})


class SimNotifyHandler(SimHandler):
    """POST /sim/orders/<no>/notify {"mode"?, "count"?}: resend (or forge) the notification."""

    async def post(self, out_trade_no):
        data = self.json_body()
        order = self.order_named(out_trade_no)
        mode = data.get("mode") or "normal"
        if mode not in MODES:
            raise SimError(400, "BAD_FIELD", "mode must be one of " + ", ".join(MODES))
        count = number(data, "count", 5, 1, 50)
        # Forgeries may claim an unpaid order was paid: that is the attack to refuse.
        if not order.paid and mode not in FORGED:
            raise SimError(409, "NOT_PAID", "order %s is %s: only paid orders are notified "
                           "(bad_sign and wrong_amount forgeries work on any order)"
                           % (out_trade_no, order.trade_state))
        attempts = await self.notifier.resend(order, mode, int(count))
        self.reply({"attempts": attempts})


class SimNotificationsHandler(SimHandler):
    """GET /sim/notifications[?out_trade_no=&kind=payment|refund&out_refund_no=]."""

    def get(self):
        filters = {k: self.get_query_argument(k, None)
                   for k in ("out_trade_no", "kind", "out_refund_no")}
        records = [r for r in self.state.notifications
                   if all(v is None or r.get(k) == v for k, v in filters.items())]
        self.reply({"notifications": records, "pending": self.notifier.pending()})


class SimRequestsHandler(SimHandler):
    def get(self):
        entries = list(self.state.requests)
        limit = self.get_query_argument("limit", None)
        if limit is not None:
            if not limit.isdigit():
                raise SimError(400, "BAD_FIELD", "limit must be a non-negative integer")
            entries = entries[len(entries) - int(limit):] if int(limit) else []
        self.reply({"requests": entries})


class SimFaultsHandler(SimHandler):
    """POST adds a fault rule for one WeChat path; GET lists; DELETE clears."""

    def post(self):
        data = self.json_body()
        path, kind = canonical_api(data.get("path")), data.get("kind")
        if path not in WECHAT_APIS:
            raise SimError(400, "BAD_FIELD", "path must be one of " + ", ".join(WECHAT_APIS))
        if kind not in FAULT_KINDS:
            raise SimError(400, "BAD_FIELD", "kind must be one of " + ", ".join(FAULT_KINDS))
        fault = self.state.add_fault(path, kind, fault_value(data, kind),
                                     number(data, "probability", 1.0, 0, 1), fault_count(data))
        self.reply({"id": fault.id, "fault": dataclasses.asdict(fault)}, 201)

    def get(self):
        self.reply({"faults": [dataclasses.asdict(f) for f in self.state.faults]})

    def delete(self):
        deleted = len(self.state.faults)
        self.state.faults = []
        self.reply({"deleted": deleted})


class SimFaultHandler(SimHandler):
    """DELETE /sim/faults/<id>: remove one rule."""

    def delete(self, fault_id):
        before = len(self.state.faults)
        self.state.faults = [f for f in self.state.faults if f.id != fault_id]
        if len(self.state.faults) == before:
            raise SimError(404, "FAULT_NOT_FOUND", "no fault %s" % fault_id)
        self.reply({"deleted": 1})


def canonical_api(path):
    """/sandboxnew/pay/orderquery/ -> /pay/orderquery; both getsignkey paths -> /pay/getsignkey."""
    if not isinstance(path, str):
        return None
    path = "/" + path.strip("/")
    for prefix in SANDBOX_PREFIXES:
        if path.startswith(prefix + "/"):
            path = path[len(prefix):]
    return "/pay/getsignkey" if path == GETSIGNKEY_XDC else path


def fault_value(data, kind):
    if kind == "latency":
        return number(data, "value", None, 0, 600000)
    if kind == "status":
        status = number(data, "value", None, 200, 599)
        if status != int(status):
            raise SimError(400, "BAD_FIELD", "value must be an integer HTTP status")
        return int(status)
    return data.get("value")


def fault_count(data):
    if data.get("count") is None:
        return None
    count = number(data, "count", None, 1, 10 ** 9)
    if count != int(count):
        raise SimError(400, "BAD_FIELD", "count must be a positive integer")
    return int(count)


class SimClockHandler(SimHandler):
    def get(self):
        self.reply(self.clock_json())

    def post(self):
        data = self.json_body()
        self.state.clock.advance(number(data, "advance", None, 0, 10 ** 9))
        self.notifier.reschedule()
        self.reply(self.clock_json())

    def clock_json(self):
        clock = self.state.clock
        return {"now": clock.now(), "offset": clock.offset, "time_scale": clock.time_scale}


class SimResetHandler(SimHandler):
    def post(self):
        self.notifier.cancel_all()
        self.state.reset()
        self.reply({"reset": True})


class SimStatsHandler(SimHandler):
    """Transport counters: a client that reuses connections opens few for many calls."""

    def get(self):
        self.reply({"connections_accepted": self.state.stats["connections_accepted"],
                    "wechat_requests": self.state.stats["wechat_requests"]})


class SimConfigHandler(SimHandler):
    """What the simulator serves, without any secret (the demo learns the appid here)."""

    def get(self):
        config = self.state.config
        self.reply({"apps": [{"appid": a} for a in config.apps],
                    "merchants": [{"mch_id": m.mch_id, "appids": list(m.appids)}
                                  for m in config.merchants.values()],
                    "time_scale": self.state.clock.time_scale,
                    "refund_delay": self.state.refund_delay})
