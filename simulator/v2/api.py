"""WeChat Pay v2 endpoints: unifiedorder, orderquery, closeorder, refund, refundquery and
getsignkey, each one pipeline: parse -> required fields -> signature -> appid -> scenarios ->
rules (State) -> signed answer."""
import re

import tornado.iostream

from simulator import payurls
from simulator.endpoint import WeChatEndpoint
from simulator.rules import MAX_BODY, TRADE_STATE_DESC
from simulator.v2 import wire as v2wire
from simulator.v2.rules import (BODY_TOO_LARGE, DES, LACK_PARAMS, MAX_NONCE, NONCE_TOO_LONG,
                                NOT_UTF8, POST_DATA_EMPTY, REQUIRE_POST, SIGN_ERROR,
                                SIGN_TYPE_ERROR, SYSTEM_BUSY, XML_FORMAT_ERROR, PayError,
                                ProtocolFail, refund_page)

NEGATIVE_TEST = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# /secapi/ without the merchant's client certificate: WeChat does not answer at all, it closes
# the connection (SDK users report "failed to respond" / "not enough data" until they
# configure apiclient_cert.pem, e.g. egzosn/pay-java-parent#24, befinal/node-tenpay#77).
NO_CLIENT_CERT = "NO_CLIENT_CERT"
NO_CLIENT_CERT_DETAIL = ("/secapi/ needs the merchant's client certificate (apiclient_cert.pem "
                         "and apiclient_key.pem; here the simulator's merchant.pem and "
                         "merchant-key.pem, issued by its CA): WeChat closes the connection "
                         "without an answer")


class PayHandler(WeChatEndpoint):
    """parse -> required fields -> signature -> appid -> scenarios -> rules -> signed answer."""
    required = ("appid", "mch_id", "nonce_str", "sign")
    one_of = ()                 # the keys of which one names the order (or refund)
    sandbox = False
    needs_client_cert = False   # /secapi/: the merchant's client certificate, over TLS
    client_cn = None            # the CN of a verified client certificate

    def get(self, prefix=None):
        self.fail(ProtocolFail(REQUIRE_POST))

    async def post(self, prefix=None):
        self.sandbox = prefix is not None
        self.msg, self.merchant, self.sign_type = {}, None, v2wire.MD5
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
            self.msg = v2wire.parse_xml(body)
        except v2wire.XMLError as exc:
            return_msg = NOT_UTF8 if exc.not_utf8 else XML_FORMAT_ERROR
            raise ProtocolFail(return_msg, exc.reason) from None
        return self.msg

    def require(self, msg):
        missing = [name for name in self.required_fields(msg) if not msg.get(name)]
        if missing:
            raise ProtocolFail(LACK_PARAMS, "missing: " + ", ".join(missing))
        if len(msg["nonce_str"]) > MAX_NONCE:
            raise ProtocolFail(NONCE_TOO_LONG,
                               "nonce_str is longer than %d characters" % MAX_NONCE)
        self.sign_type = msg.get("sign_type") or v2wire.MD5
        if self.sign_type not in v2wire.SIGN_TYPES:
            raise ProtocolFail(SIGN_TYPE_ERROR, "sign_type must be MD5 or HMAC-SHA256")

    def required_fields(self, msg):
        """required, and out_trade_no when none of the order's keys (`one_of`) is given."""
        if self.one_of and not any(msg.get(k) for k in self.one_of):
            return self.required + ("out_trade_no",)
        return self.required

    def check_signature(self, msg):
        self.merchant = self.state.config.merchants.get(msg["mch_id"])
        if self.merchant is None:
            raise PayError("MCHID_NOT_EXIST")
        key = self.signing_key()
        if v2wire.verify(msg, key, self.sign_type):
            self.entry["signature"] = "ok"
            return
        self.entry["signature"] = "bad"
        self.entry["explanation"] = v2wire.explain_signature_failure(
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
        out["nonce_str"] = v2wire.nonce()
        return out

    def signed(self, out):
        if self.merchant is None:
            return out      # an unknown mch_id has no key to sign with
        key = v2wire.nonce() if self.bad_sign else self.signing_key()
        out["sign"] = v2wire.sign(out, key, self.sign_type)
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
        self.finish(v2wire.to_xml(fields))

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", "text/xml; charset=utf-8")
        self.finish(v2wire.to_xml({"return_code": "FAIL", "return_msg": SYSTEM_BUSY}))


class UnifiedOrderHandler(PayHandler):
    api = "/pay/unifiedorder"
    required = PayHandler.required + ("body", "out_trade_no", "total_fee", "spbill_create_ip",
                                      "notify_url", "trade_type")

    def required_fields(self, msg):
        # openid identifies the payer of a Mini Program (JSAPI) payment; NATIVE, APP and MWEB
        # orders have none (统一下单: openid "trade_type=JSAPI时（即JSAPI支付），此参数必传").
        extra = ("openid",) if msg.get("trade_type") == "JSAPI" else ()
        return self.required + extra

    def rules(self, msg):
        """统一下单's answer: prepay_id for every trade_type, plus code_url for NATIVE and
        mweb_url for MWEB; APP's client signs its own pay parameters from the prepay_id."""
        order = self.state.unified_order(self.merchant, msg, self.sandbox)
        out = {"trade_type": msg["trade_type"], "prepay_id": order.prepay_id}
        if msg["trade_type"] == "NATIVE":
            out["code_url"] = payurls.code_url(order.prepay_id)
        elif msg["trade_type"] == "MWEB":
            base = "%s://%s" % (self.request.protocol, self.request.host)
            self.state.issue_h5_link(order)
            out["mweb_url"] = payurls.mweb_url(base, order.prepay_id, order.h5_link)
        return out


class OrderQueryHandler(PayHandler):
    api = "/pay/orderquery"
    one_of = ("transaction_id", "out_trade_no")

    def rules(self, msg):
        order = self.state.find_order(msg["mch_id"], msg.get("out_trade_no", ""),
                                      msg.get("transaction_id", ""))
        if order is None or order.appid != msg["appid"]:
            raise PayError("ORDERNOTEXIST")
        return query_fields(order)


def query_fields(order):
    """orderquery's answer. Like real WeChat's it always carries device_info and attach, empty
    when the order has none: present in the XML, left out of the signature (protocol.md 3), so
    a client that signs empty values fails here. A coupon payment adds the coupon fields."""
    out = {"device_info": order.device_info, "out_trade_no": order.out_trade_no,
           "trade_state": order.trade_state,
           "trade_state_desc": TRADE_STATE_DESC[order.trade_state],
           "trade_type": order.fields["trade_type"], "total_fee": str(order.total_fee),
           "fee_type": order.fields.get("fee_type") or "CNY",
           "attach": order.fields.get("attach", "")}
    if order.transaction_id:
        out.update(openid=order.openid, is_subscribe="N", bank_type=order.bank_type,
                   cash_fee=str(order.cash_fee), cash_fee_type="CNY",
                   transaction_id=order.transaction_id, time_end=order.time_end)
        out.update(order.coupon_fields())
    return out


class CloseOrderHandler(PayHandler):
    api = "/pay/closeorder"
    required = PayHandler.required + ("out_trade_no",)

    def rules(self, msg):
        order = self.state.find_order(msg["mch_id"], msg["out_trade_no"])
        if order is None or order.appid != msg["appid"]:
            raise PayError("ORDERNOTEXIST")
        self.state.close_order(order)
        # Real answers carry result_msg and sub_mch_id empty: in the XML, not signed.
        return {"sub_mch_id": "", "result_msg": ""}


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
    one_of = ("transaction_id", "out_trade_no")

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
            self.settlement.schedule(refund)
        return {"transaction_id": refund.transaction_id, "out_trade_no": refund.out_trade_no,
                "out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id,
                "refund_channel": "", "refund_fee": str(refund.refund_fee),
                "total_fee": str(refund.total_fee), "cash_fee": str(refund.total_fee),
                "cash_refund_fee": str(refund.refund_fee), "coupon_refund_fee": "0",
                "coupon_refund_count": "0"}


class RefundQueryHandler(PayHandler):
    """POST /pay/refundquery: refund_id > out_refund_no > transaction_id > out_trade_no."""
    api = "/pay/refundquery"
    one_of = ("refund_id", "out_refund_no", "transaction_id", "out_trade_no")

    def rules(self, msg):
        order, refunds = self.state.query_refunds(msg["mch_id"], msg["appid"], msg)
        offset = msg.get("offset", "")
        page = refund_page(refunds, offset)
        out = {"transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no,
               "total_fee": str(order.total_fee), "cash_fee": str(order.cash_fee),
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
