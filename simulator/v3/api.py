"""WeChat Pay API v3 endpoints (JSAPI): create, query by out_trade_no and by transaction_id,
close, refund, refund query, and GET /v3/certificates; each one pipeline: faults ->
Authorization (merchant, serial, timestamp, signature, nonce) -> JSON body -> scenarios ->
rules (State) -> a JSON answer signed with WeChat's key, or WeChat's {"code", "message"}.
"""
import json

from cryptography.hazmat.primitives import serialization
from tornado import httputil

from simulator.endpoint import V3_APIS, WeChatEndpoint
from simulator.rules import MAX_BODY
from simulator.v2.api import NEGATIVE_TEST
from simulator.v3 import notifications as v3notifications, rules as v3rules, wire as v3wire
from simulator.v3.auth import Authentication
from simulator.v3.rules import V3Error

# What the `malformed` fault answers: cut off mid-document, like a broken proxy.
MALFORMED_JSON = b'{"code":"SYSTEM_ERROR","message":"\xe7\xb3\xbb'
JSON_TYPE = "application/json; charset=utf-8"
JSAPI, QUERY_OUT_TRADE_NO, QUERY_ID, CLOSE, REFUND, REFUND_QUERY, CERTIFICATES = V3_APIS


class WireHeaders(httputil.HTTPHeaders):
    """HTTPHeaders that write Request-ID as WeChat spells it. HTTPHeaders keeps every name in
    Http-Header-Case, so it would leave as Request-Id, and wechatpay-java looks Request-ID up
    in a case-sensitive map of the names as received."""
    SPELLING = {"Request-Id": "Request-ID"}

    def get_all(self):
        for name, value in super().get_all():
            yield self.SPELLING.get(name, name), value


class V3Endpoint(Authentication, WeChatEndpoint):
    """faults -> Authorization -> body -> scenarios -> rules -> signed JSON answer."""
    method = "POST"
    malformed = MALFORMED_JSON

    def prepare(self):
        super().prepare()
        self.auth = self.merchant = None
        self.empty_json = False         # a 204 answer: see flush()

    async def serve(self, *path_args):
        self.entry["signature"] = None
        if await self.apply_faults():
            return
        try:
            if self.request.method != self.method:
                raise V3Error("INVALID_REQUEST", "请求方法不正确", status=405,
                              detail="%s takes %s, not %s" % (self.api, self.method,
                                                               self.request.method))
            self.check_headers()
            self.authenticate()
            body = self.parse_body()
            self.check_scenarios()
            status, data = self.rules(body, *path_args)
            self.answer(status, data)
        except V3Error as exc:
            self.fail(exc)

    async def get(self, *args):
        await self.serve(*args)

    async def post(self, *args):
        await self.serve(*args)

    # --- body, scenarios ----------------------------------------------------------------
    def parse_body(self):
        if self.method == "GET":
            return {}
        body = self.request.body
        if len(body) > MAX_BODY:
            raise V3Error("PARAM_ERROR", "请求体过大", detail="body over %d bytes" % MAX_BODY)
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise V3Error("PARAM_ERROR", "请求体不是合法的JSON",
                          detail="the body is not UTF-8 JSON: %s" % exc) from None
        if not isinstance(data, dict):
            raise V3Error("PARAM_ERROR", "请求体必须是JSON对象")
        return data

    def check_scenarios(self):
        case = self.request.headers.get("Wechatpay-Negative-Test", "").strip()
        if NEGATIVE_TEST.match(case):
            self.entry["negative_test"] = case
            raise V3Error(case, detail="Wechatpay-Negative-Test: " + case)
        if self.system_error:
            raise V3Error("SYSTEM_ERROR")

    def query_mchid(self):
        mchid = self.get_query_argument("mchid", "")
        if not mchid:
            raise V3Error("PARAM_ERROR", "mchid为必填参数",
                          detail="the query string lacks mchid")
        self.same_mchid(mchid, "the query string")
        return mchid

    def rules(self, body, *path_args):
        raise NotImplementedError

    # --- answers ------------------------------------------------------------------------
    def answer(self, status, data=None):
        self.entry["status"] = status
        self.write_signed(status, data)

    def fail(self, exc):
        self.entry.update(error=exc.code, detail=exc.detail, status=exc.status)
        # WeChat signs the answers of requests whose signature it verified, and only those
        verified = self.entry.get("signature") == "ok"
        self.write_signed(exc.status, {"code": exc.code, "message": exc.message}, sign=verified)

    def write_signed(self, status, data, sign=True):
        """The answer with WeChat's signature headers (a 204 too: its body is empty)."""
        body = b"" if data is None else json.dumps(
            data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.set_status(status)
        if sign:
            self.sign_answer(body)
        self.set_header("Request-ID", v3wire.nonce(40).lower())
        if status == 204:
            self.empty_json = True
            return self.finish()
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(body)

    def flush(self, include_footers=False):
        """The headers go out as WeChat writes them. Its 204 carries Content-Type and
        Content-Length: 0, which RequestHandler.finish() removes (Content-Type) and leaves
        out (the length) just before it calls flush(): set here, after that."""
        if self.empty_json:
            self.set_header("Content-Type", JSON_TYPE)
            self.set_header("Content-Length", 0)
        self._headers = WireHeaders(self._headers)      # what Tornado writes the headers from
        return super().flush(include_footers)

    def sign_answer(self, body):
        kind = self.state.v3.answer_signer(self.request.headers.get("Wechatpay-Serial"))
        serial, key = self.state.v3.signing_key(kind)
        mode = "bad_sign" if self.bad_sign else "normal"
        headers, facts = v3notifications.signed_headers(body, serial, key, mode)
        for name, value in headers.items():
            if name != "Content-Type":
                self.set_header(name, value)
        self.entry["signed_with"] = kind
        self.entry["wechatpay_serial"] = facts["wechatpay_serial"]

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", JSON_TYPE)
        self.finish({"code": "SYSTEM_ERROR", "message": v3rules.MESSAGES["SYSTEM_ERROR"]})



class JsapiHandler(V3Endpoint):
    """POST /v3/pay/transactions/jsapi -> 200 {"prepay_id"} (the other kinds: v3/kinds.py)."""
    api = JSAPI
    trade_type = "JSAPI"

    def rules(self, body):
        self.same_mchid(v3rules.string(body, "mchid"), "the body")
        appid = v3rules.string(body, "appid")
        if appid not in self.merchant_appids():
            raise V3Error("APPID_MCHID_NOT_MATCH", detail="appid %s is not bound to mchid %s"
                          % (appid, self.auth["mchid"]))
        order = self.state.v3_order(self.auth["mchid"], appid, body, self.trade_type)
        self.entry["out_trade_no"] = order.out_trade_no
        return 200, self.created(order)

    def created(self, order):
        """What the create call answers: the prepay_id that wx.requestPayment pays."""
        return {"prepay_id": order.prepay_id}

    def merchant_appids(self):
        merchant = self.state.config.merchants.get(self.auth["mchid"])
        return merchant.appids if merchant else ()


class QueryHandler(V3Endpoint):
    """GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid= -> the transaction."""
    api = QUERY_OUT_TRADE_NO
    method = "GET"

    def rules(self, body, out_trade_no):
        mchid = self.query_mchid()
        return 200, v3notifications.transaction(self.order(mchid, out_trade_no=out_trade_no))

    def order(self, mchid, out_trade_no="", transaction_id=""):
        order = self.state.find_order(mchid, out_trade_no, transaction_id)
        if order is None:
            raise V3Error("ORDER_NOT_EXIST", detail="merchant %s has no order %s"
                          % (mchid, out_trade_no or transaction_id))
        self.entry["out_trade_no"] = order.out_trade_no
        return order


class QueryByIdHandler(QueryHandler):
    """GET /v3/pay/transactions/id/{transaction_id}?mchid= -> the transaction."""
    api = QUERY_ID

    def rules(self, body, transaction_id):
        mchid = self.query_mchid()
        return 200, v3notifications.transaction(self.order(mchid, transaction_id=transaction_id))


class CloseHandler(QueryHandler):
    """POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close {"mchid"} -> 204."""
    api = CLOSE
    method = "POST"

    def rules(self, body, out_trade_no):
        self.same_mchid(v3rules.string(body, "mchid"), "the body")
        self.state.v3_close(self.order(self.auth["mchid"], out_trade_no=out_trade_no))
        return 204, None


class RefundHandler(V3Endpoint):
    """POST /v3/refund/domestic/refunds -> the refund, PROCESSING until the refund delay has
    passed (then SUCCESS or the outcome the control plane chose, and its notification)."""
    api = REFUND

    def rules(self, body):
        fields = v3rules.check_refund(body)
        refund, repeated = self.state.v3_refund(self.auth["mchid"], fields)
        self.entry.update(out_trade_no=refund.out_trade_no, out_refund_no=refund.out_refund_no,
                          repeated=repeated)
        if not repeated:
            self.settlement.schedule(refund)
        order = self.state.orders.get((refund.mch_id, refund.out_trade_no))
        return 200, v3notifications.refund_resource(refund, order)


class RefundQueryHandler(V3Endpoint):
    """GET /v3/refund/domestic/refunds/{out_refund_no} -> the refund."""
    api = REFUND_QUERY
    method = "GET"

    def rules(self, body, out_refund_no):
        refund = self.state.refunds.get((self.auth["mchid"], out_refund_no))
        if refund is None:
            raise V3Error("RESOURCE_NOT_EXISTS", "退款单不存在",
                          detail="merchant %s has no refund %s" % (self.auth["mchid"],
                                                                   out_refund_no))
        self.entry.update(out_trade_no=refund.out_trade_no, out_refund_no=out_refund_no)
        order = self.state.orders.get((refund.mch_id, refund.out_trade_no))
        return 200, v3notifications.refund_resource(refund, order)


class CertificatesHandler(V3Endpoint):
    """GET /v3/certificates: the platform certificate, encrypted with the merchant's APIv3 key
    (associated_data "certificate"), as WeChat serves it; in public-key mode 404
    RESOURCE_NOT_EXISTS, as WeChat answers merchants that have only the public key."""
    api = CERTIFICATES
    method = "GET"

    def rules(self, body):
        v3 = self.state.v3
        if not v3.serves_certificates():
            raise V3Error("RESOURCE_NOT_EXISTS", v3rules.NO_CERTIFICATE,
                          detail="key mode public-key: there is no platform certificate")
        cert = v3.platform_cert
        pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return 200, {"data": [{
            "serial_no": v3.platform_serial,
            "effective_time": v3wire.rfc3339(cert.not_valid_before_utc.timestamp()),
            "expire_time": v3wire.rfc3339(cert.not_valid_after_utc.timestamp()),
            "encrypt_certificate": v3wire.encrypt(self.merchant.apiv3_key, pem,
                                                  "certificate")}]}


def routes():
    """(pattern, handler) of every v3 path."""
    segment = r"([^/?]+)"
    return [
        (r"/v3/pay/transactions/jsapi/?", JsapiHandler),
        (r"/v3/pay/transactions/out-trade-no/%s/close/?" % segment, CloseHandler),
        (r"/v3/pay/transactions/out-trade-no/%s/?" % segment, QueryHandler),
        (r"/v3/pay/transactions/id/%s/?" % segment, QueryByIdHandler),
        (r"/v3/refund/domestic/refunds/?", RefundHandler),
        (r"/v3/refund/domestic/refunds/%s/?" % segment, RefundQueryHandler),
        (r"/v3/certificates/?", CertificatesHandler),
    ]
