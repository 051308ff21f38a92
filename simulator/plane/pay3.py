"""The phone paying API v3's Native, H5 and App orders (plane/pay.py chooses it): a scanned
code_url, an opened h5_url, or the App's call to the WeChat SDK (APP调起支付) whose RSA sign is
checked."""
from simulator import payurls
from simulator.models import beijing
from simulator.plane.phone import PaymentFail, explain_rsa_sign, js_type
from simulator.rules import PREPAY_TTL
from simulator.v3 import wire as v3wire

# APP调起支付 (v3, WeChat's App docs): these fields, package the constant Sign=WXPay, and sign =
# base64 SHA256withRSA with the merchant API certificate's key over
# appid\ntimestamp\nnoncestr\nprepayid\n (partnerid and package are passed, not signed).
APP_FIELDS = ("appid", "partnerid", "prepayid", "package", "noncestr", "timestamp", "sign")
APP_PACKAGE = "Sign=WXPay"
# Which field names the order, the order's trade_type, and the request log's api.
KINDS = {"code_url": ("NATIVE", "Native (scan code_url)"),
         "h5_url": ("MWEB", "H5 (open h5_url)"),
         "prepayid": ("APP", "APP调起支付")}
KIND_NAMES = {"NATIVE": "a Native", "MWEB": "an H5 (MWEB)", "APP": "an App", "JSAPI": "a JSAPI"}


class V3Payer:
    """v3 orders of the other kinds, mixed into plane/pay.py's SimPayHandler (a
    phone.SimPayHandler: self.state, self.entry): {"code_url"} (Native: the payer scans it),
    {"h5_url"} (H5), or the App's fields {"appid", "partnerid", "prepayid", "package":
    "Sign=WXPay", "noncestr", "timestamp", "sign"}; each with wx.requestPayment's optional
    "result" and coupon, and an optional "user" who pays (default "default": the order's
    payer.openid is that user's for the order's appid)."""

    def v3_kind_order(self, field, data):
        """The v3 order the body's field (code_url, h5_url, prepayid) names, payable now."""
        order = self.v3_order(field, data)
        self.check_payable(order, field)
        user = data.get("user", "default")
        if isinstance(user, bool) or not isinstance(user, (str, int)) or str(user) == "":
            raise PaymentFail(400, "requestPayment:fail user must be a non-empty string")
        self.state.v3_payer(order, str(user))
        return order

    def v3_order(self, field, data):
        """The v3 order the body names (checked: kind, App fields and sign)."""
        trade_type, api = KINDS[field]
        self.entry["api"] = api
        if trade_type == "APP":
            check_strings(data, APP_FIELDS)
        prepay_id = prepay_named(field, data[field])
        order = self.state.by_prepay.get(prepay_id or "")
        if order is None or order.api != "v3":
            raise PaymentFail(400, "requestPayment:fail %s invalid: it names no v3 order of "
                              "this simulator" % field)
        self.entry["out_trade_no"] = order.out_trade_no
        ordered_as = order.fields.get("trade_type") or "JSAPI"
        if ordered_as != trade_type:
            raise PaymentFail(400, "requestPayment:fail %s names %s order, not %s one"
                              % (field, KIND_NAMES[ordered_as], KIND_NAMES[trade_type]))
        if order.prepay_id != prepay_id:
            raise PaymentFail(400, "requestPayment:fail %s expired: a later 下单 of order %s "
                              "issued a new one" % (field, order.out_trade_no))
        if trade_type == "APP":
            self.check_app_call(order, data)
        return order

    def check_payable(self, order, field):
        """Paid or closed (409), the link or prepay_id expired, time_expire passed (400)."""
        if order.paid:
            raise PaymentFail(409, "requestPayment:fail 该订单已支付")
        if order.trade_state == "CLOSED":
            raise PaymentFail(409, "requestPayment:fail 该订单已关闭")
        if field == "h5_url" and self.state.h5_link_expired(order):
            raise PaymentFail(400, "requestPayment:fail "
                              + payurls.h5_link_expired(field, order.out_trade_no))
        if self.state.prepay_expired(order):
            raise PaymentFail(400, "requestPayment:fail %s expired (it lives %g hours): a new "
                              "下单 with the same out_trade_no issues a new one"
                              % (field, PREPAY_TTL / 3600))
        time_expire = order.fields.get("time_expire")
        if time_expire and beijing(self.state.clock.now()) >= time_expire:
            raise PaymentFail(400, "requestPayment:fail order expired at time_expire "
                              + time_expire)

    def check_app_call(self, order, data):
        """The App's fields against the order, then its sign (explained when it fails)."""
        if data["appid"] != order.appid:
            raise PaymentFail(400, "requestPayment:fail appid %s is not the order's appid %s"
                              % (data["appid"], order.appid))
        if data["partnerid"] != order.mch_id:
            raise PaymentFail(400, "requestPayment:fail partnerid %s is not the order's mchid %s"
                              % (data["partnerid"], order.mch_id))
        if data["package"] != APP_PACKAGE:
            raise PaymentFail(400, "requestPayment:fail package must be %s, not %r"
                              % (APP_PACKAGE, data["package"]))
        merchant = self.state.v3.merchant(order.mch_id) if self.state.v3 else None
        message = v3wire.app_sign_message(data["appid"], data["timestamp"], data["noncestr"],
                                          data["prepayid"])
        if merchant is not None and v3wire.verify(merchant.public_key, message, data["sign"]):
            self.entry["signature"] = "ok"
            return
        self.entry["signature"] = "bad"
        self.entry["explanation"] = explain_app_sign(merchant, data, message)
        raise PaymentFail(400, "requestPayment:fail 支付验证签名失败")


def prepay_named(field, value):
    """The prepay_id a code_url, h5_url or prepayid names (None: not one of the simulator's)."""
    return {"code_url": v3wire.prepay_of_code_url, "h5_url": v3wire.prepay_of_h5_url,
            "prepayid": str}[field](value)


def check_strings(data, names):
    for name in names:
        if not isinstance(data.get(name), str):
            raise PaymentFail(400, "requestPayment:fail parameter error: parameter.%s should be "
                              "String instead of %s;" % (name, js_type(data.get(name))))


def explain_app_sign(merchant, data, message):
    """Why an App call's sign failed: the string to sign, and the mistakes it matches."""
    return explain_rsa_sign(merchant, "sign", data["sign"], message, "a v3 order's App call",
                            lambda: app_sign_variants(data), "appid\\ntimestamp\\nnoncestr\\nprepayid\\n")


def app_sign_variants(data):
    """App sign mistakes: the last \\n left out, package or partnerid signed too, prepay_id=
    before the prepayid (JSAPI's package), timestamp and noncestr swapped."""
    appid, ts, nonce, prepay = (data[k] for k in ("appid", "timestamp", "noncestr", "prepayid"))
    message = v3wire.app_sign_message(appid, ts, nonce, prepay)
    yield "the last \\n is left out", message[:-1]
    yield "Sign=WXPay is signed too (after prepayid)", message + (APP_PACKAGE + "\n").encode()
    yield ("partnerid is signed too (after appid)", ("%s\n%s\n%s\n%s\n%s\n" % (
        appid, data["partnerid"], ts, nonce, prepay)).encode("utf-8"))
    yield ("prepayid is signed as prepay_id=<prepayid>, JSAPI's package",
           v3wire.app_sign_message(appid, ts, nonce, "prepay_id=" + prepay))
    yield "timestamp and noncestr are swapped", v3wire.app_sign_message(appid, nonce, ts, prepay)

