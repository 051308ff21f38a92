"""The phone paying API v2's orders made outside a Mini Program (plane/pay.py chooses it): a
Native order's code_url scanned ({"code_url"}), an App's pay parameters handed to WXApi.sendReq
({"appid", "partnerid", "prepayid", "package", "noncestr", "timestamp", "sign"}) and an H5
order's mweb_url opened ({"mweb_url"}).

Each takes the optional "result", "coupon_fee" and "coupon_type" of phone.py, and "user" (as
/sim/login's): who pays, whose openid the notification and orderquery then name. Every answer
is worded as wx.requestPayment's (errMsg), and names the order's trade_type."""
from simulator import payurls
from simulator.models import PAYER_USER
from simulator.plane import phone
from simulator.plane.phone import PaymentFail, unpayable
from simulator.v2 import wire as v2wire

# APP调起支付 (v2): the App passes appid, partnerid (the mch_id), prepayid, package (the fixed
# "Sign=WXPay"), noncestr, timestamp and sign to WXApi.sendReq; sign is the v2 signature over
# exactly those six lowercase keys with the API key, and "签名方式一定要与统一下单接口使用的一致"
# (MD5 or HMAC-SHA256, as unifiedorder was signed).
APP_FIELDS = ("appid", "partnerid", "prepayid", "package", "noncestr", "timestamp", "sign")
APP_PACKAGE = "Sign=WXPay"
APIS = {"NATIVE": "Native scan (code_url)", "APP": "App pay (WXApi.sendReq)",
        "MWEB": "H5 pay (mweb_url)"}
FAIL = "requestPayment:fail "
SIGN_FAIL = FAIL + "支付验证签名失败"
# unpayable()'s codes as the phone shows them: (HTTP status, errMsg's text or None = its message)
REFUSALS = {"ORDER_PAID": (409, "该订单已支付"), "ORDER_CLOSED": (409, "该订单已关闭"),
            "PREPAY_EXPIRED": (400, None), "ORDER_EXPIRED": (400, None)}


class V2Payer:
    """The v2 Native scan, App call and H5 page, mixed into plane/pay.py's SimPayHandler (a
    phone.SimPayHandler: self.state, self.entry)."""

    def v2_kind_order(self, kind, data):
        """The v2 order of that kind (NATIVE, APP, MWEB) the body names, payable now."""
        self.entry["api"] = APIS[kind]
        user = data.get("user", PAYER_USER)
        if not isinstance(user, str) or not user:
            raise PaymentFail(400, FAIL + "user must be a non-empty string")
        order = {"NATIVE": self.scanned, "APP": self.app_call, "MWEB": self.opened}[kind](data)
        self.entry["out_trade_no"] = order.out_trade_no
        refuse(self.state, order)
        self.state.set_payer(order, user)
        return order

    def scanned(self, data):
        """The Native order whose code_url was scanned."""
        url = data["code_url"]
        prepay_id = payurls.prepay_of_code_url(self.state.by_prepay, url)
        if prepay_id is None:
            raise PaymentFail(400, FAIL + "code_url invalid: not a code_url (%s...) this "
                              "simulator answered to a NATIVE unifiedorder"
                              % payurls.CODE_URL_PREFIX)
        return self.current(prepay_id, "NATIVE", "code_url")

    def opened(self, data):
        """The H5 order whose mweb_url the browser opened (on whichever host it names), while
        that link lives (payurls.H5_LINK_TTL)."""
        named = payurls.prepay_of_mweb_url(data["mweb_url"])
        order = self.state.by_prepay.get(named[0]) if named else None
        links = [payurls.mweb_package(named[0], n) for n in range(order.h5_link + 1)] \
            if order is not None else []
        if named is None or named[1] not in links:
            raise PaymentFail(400, FAIL + "mweb_url invalid: not an mweb_url (%s?prepay_id=..."
                              "&package=...) this simulator answered to an MWEB unifiedorder"
                              % payurls.MWEB_PATH)
        order = self.current(named[0], "MWEB", "mweb_url")
        if named[1] != links[-1] or self.state.h5_link_expired(order):
            raise PaymentFail(400, FAIL + payurls.h5_link_expired("mweb_url", order.out_trade_no))
        return order

    def app_call(self, data):
        """The APP order of the App's pay parameters, once their sign checks out."""
        for name in APP_FIELDS:
            if not isinstance(data.get(name), str):
                raise PaymentFail(400, FAIL + "parameter error: parameter.%s should be String "
                                  "instead of %s;" % (name, phone.js_type(data.get(name))))
        params = {name: data[name] for name in APP_FIELDS}
        order = self.current(params["prepayid"], "APP", "prepayid")
        if (params["appid"], params["partnerid"]) != (order.appid, order.mch_id):
            raise PaymentFail(400, FAIL + "appid and partnerid must be the order's appid and "
                              "mch_id (%s, %s)" % (order.appid, order.mch_id))
        if params["package"] != APP_PACKAGE:
            raise PaymentFail(400, FAIL + "package must be %s" % APP_PACKAGE)
        self.check_app_sign(order, params)
        return order

    def current(self, prepay_id, trade_type, name):
        """The v2 order of a prepay_id of that trade_type, while it is its prepay_id (a v3
        order's links are v3's: its prepay_id in a v2-shaped link was never answered)."""
        order = self.state.by_prepay.get(prepay_id)
        if order is None or order.api != "v2" or order.fields.get("trade_type") != trade_type:
            raise PaymentFail(400, FAIL + "%s invalid: it names no v2 %s order"
                              % (name, trade_type))
        if order.prepay_id != prepay_id:
            raise PaymentFail(400, FAIL + "%s expired: a later unifiedorder of order %s issued "
                              "a new prepay_id" % (name, order.out_trade_no))
        return order

    def check_app_sign(self, order, params):
        merchant = self.state.config.merchants[order.mch_id]
        key = merchant.key(order.sandbox)
        if v2wire.verify(params, key, order.sign_type):
            self.entry["signature"] = "ok"
            return
        self.entry["signature"] = "bad"
        secret = self.state.config.apps[order.appid].secret
        wrong = [("the AppSecret (use the merchant API key)", secret),
                 ("the other environment's key", merchant.key(not order.sandbox))]
        explanation = v2wire.explain_signature_failure(params, key, order.sign_type, wrong)
        hints = list(app_sign_hints(params, key, order.sign_type))
        if hints:
            explanation["hints"] = hints + [h for h in explanation["hints"]
                                            if h != v2wire.NO_MATCH_HINT]
        self.entry["explanation"] = explanation
        raise PaymentFail(400, SIGN_FAIL)


def refuse(state, order):
    """PaymentFail when the phone cannot pay the order now (paid, closed, expired)."""
    problem = unpayable(state, order)
    if problem is not None:
        status, text = REFUSALS[problem[0]]
        raise PaymentFail(status, FAIL + (text or problem[1]))


def app_sign_hints(params, key, sign_type):
    """The App-sign mistakes the sign matches: camelCase keys, the other sign type."""
    given = params["sign"]
    renames = {"appid": "appId", "partnerid": "partnerId", "prepayid": "prepayId",
               "noncestr": "nonceStr", "timestamp": "timeStamp"}
    camel = {renames.get(k, k): v for k, v in params.items()}
    if v2wire.sign(camel, key, sign_type) == given:
        yield ("the sign matches when the keys are written appId, partnerId, prepayId, nonceStr, "
               "timeStamp: the App's sign uses the lowercase keys appid, partnerid, prepayid, "
               "noncestr, timestamp")
    other = v2wire.HMAC_SHA256 if sign_type == v2wire.MD5 else v2wire.MD5
    if v2wire.sign(params, key, other) == given:
        yield ("the sign is %s but unifiedorder was signed %s: the App's sign must use the "
               "order's sign type" % (other, sign_type))
