"""The phone: wx.login (POST /sim/login) and wx.requestPayment (POST /sim/pay) played, with
paySign checked as WeChat's client checks it; and the console's phone (POST
/sim/orders/<no>/phone), which needs no paySign."""

from simulator.bodies import BodyLog
from simulator.endpoint import verdict
from simulator.models import beijing
from simulator.plane.control import SimError, SimHandler, check_same_origin
from simulator.rules import CODE_TTL, PREPAY_TTL, check_coupon
from simulator.v2 import wire as v2wire
from simulator.v3 import wire as v3wire

PAY_RESULTS = ("SUCCESS", "CANCEL", "FAIL", "USERPAYING")


class SimLoginHandler(SimHandler):
    """POST /sim/login: plays wx.login."""
    allow_cross_origin = True   # wx.login played for a Mini Program in DevTools

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
    """wx.requestPayment's fail callback: an HTTP status and WeChat's errMsg."""

    def __init__(self, status, err_msg):
        super().__init__(err_msg)
        self.status, self.err_msg = status, err_msg


class SimPayHandler(BodyLog, SimHandler):
    """POST /sim/pay: plays wx.requestPayment, checking paySign as WeChat's client does.

    Besides wx.requestPayment's fields, optional "result" (SUCCESS, CANCEL, FAIL, USERPAYING),
    "coupon_fee" (integer fen, 1 .. total_fee-1: part of a SUCCESS payment made with a coupon)
    and "coupon_type" (CASH, the default, or NO_CASH); a bad coupon is answered 400.
    """
    allow_cross_origin = True   # wx.requestPayment played for a Mini Program in DevTools
    fields = ("timeStamp", "nonceStr", "package", "signType", "paySign")

    def post(self):
        data = self.json_body()
        self.entry = self.state.log_request({
            "time": self.state.clock.now(), "method": "POST", "path": "/sim/pay",
            "api": "wx.requestPayment", "signature": None, "error": None}, wechat=False)
        try:
            order = self.checked_order(data)
            try:
                coupon = check_coupon(order, data)
            except ValueError as exc:
                raise PaymentFail(400, "requestPayment:fail " + str(exc)) from None
            self.reply(self.pay(order, data.get("result") or "SUCCESS", coupon))
        except PaymentFail as exc:
            self.entry["error"] = exc.err_msg
            self.reply({"errMsg": exc.err_msg}, exc.status)

    def on_finish(self):
        if hasattr(self, "entry"):
            self.entry["verdict"] = verdict(self.entry)
        super().on_finish()

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
            raise PaymentFail(400, "requestPayment:fail prepay_id expired (%g hours)"
                              % (PREPAY_TTL / 3600))
        time_expire = order.fields.get("time_expire")
        if time_expire and beijing(self.state.clock.now()) >= time_expire:
            raise PaymentFail(400, "requestPayment:fail order expired at time_expire "
                              + time_expire)
        return order

    def check_pay_sign(self, order, data, appid):
        if order.api == "v3":
            return self.check_rsa_pay_sign(order, data, appid)
        merchant = self.state.config.merchants[order.mch_id]
        key = merchant.key(order.sandbox)
        params = {"appId": appid, "sign": data["paySign"]}
        params.update({k: data[k] for k in self.fields if k != "paySign"})
        same_type = data["signType"] == order.sign_type
        if same_type and v2wire.verify(params, key, order.sign_type):
            self.entry["signature"] = "ok"
            return
        self.entry["signature"] = "bad"
        self.entry["explanation"] = self.explain(params, key, order, merchant)
        raise PaymentFail(400, "requestPayment:fail 支付验证签名失败")

    def explain(self, params, key, order, merchant):
        sign_type = params["signType"]
        if sign_type not in v2wire.SIGN_TYPES:
            sign_type = order.sign_type
        secret = self.state.config.apps[order.appid].secret
        wrong = [("the AppSecret (use the merchant API key)", secret),
                 ("the other environment's key", merchant.key(not order.sandbox))]
        explanation = v2wire.explain_signature_failure(params, key, sign_type, wrong)
        if params["signType"] != order.sign_type:
            explanation["hints"].insert(0, "signType is %s but unifiedorder used %s: they must be "
                                        "equal" % (params["signType"], order.sign_type))
        for label, variant in paysign_variants(params):
            if v2wire.sign(variant, key, sign_type) == params["sign"]:
                explanation["hints"].insert(0, "the sign matches when " + label)
        if len(explanation["hints"]) > 1 and v2wire.NO_MATCH_HINT in explanation["hints"]:
            explanation["hints"].remove(v2wire.NO_MATCH_HINT)
        return explanation

    def check_rsa_pay_sign(self, order, data, appid):
        """A v3 prepay_id: signType RSA, paySign = SHA256withRSA over
        appId\ntimeStamp\nnonceStr\npackage\n with the merchant's API certificate key."""
        merchant = self.state.v3.merchant(order.mch_id) if self.state.v3 else None
        message = v3wire.paysign_message(appid, data["timeStamp"], data["nonceStr"],
                                         data["package"])
        ok = (merchant is not None and data["signType"] == "RSA"
              and v3wire.verify(merchant.public_key, message, data["paySign"]))
        if ok:
            self.entry["signature"] = "ok"
            return
        self.entry["signature"] = "bad"
        self.entry["explanation"] = explain_rsa_pay_sign(merchant, appid, data, message)
        raise PaymentFail(400, "requestPayment:fail 支付验证签名失败")

    def pay(self, order, result, coupon=(0, "")):
        ok, err_msg = play(self.state, self.notifier, order, result, coupon)
        if not ok:
            raise PaymentFail(400, err_msg)
        if result == "USERPAYING":
            return {"errMsg": err_msg, "trade_state": "USERPAYING"}
        return {"errMsg": err_msg, "transaction_id": order.transaction_id,
                "out_trade_no": order.out_trade_no}


def play(state, notifier, order, result, coupon=(0, "")):
    """The payer's choice on the phone, for a payable order: (succeeded, errMsg).

    SUCCESS marks it paid (partly with coupon = (coupon_fee, coupon_type) when coupon_fee,
    checked by rules.check_coupon) and starts notification delivery; FAIL makes it PAYERROR; CANCEL
    changes nothing at WeChat; USERPAYING leaves it waiting for the password. The result is
    remembered (State.record_phone_result) for the console.
    """
    ok, err_msg = True, "requestPayment:ok"
    if result == "CANCEL":
        ok, err_msg = False, "requestPayment:fail cancel"
    elif result == "FAIL":
        state.payment_failed(order)
        ok, err_msg = False, "requestPayment:fail simulated payment failure (PAYERROR)"
    elif result == "USERPAYING":
        state.payment_pending(order)
        err_msg = "requestPayment:pending"
    else:
        coupon_fee, coupon_type = coupon
        state.mark_paid(order, coupon_fee, coupon_type or "CASH")
        notifier.start(order)
    state.record_phone_result(order, result, err_msg)
    return ok, err_msg


def unpayable(state, order):
    """Why the phone cannot pay this order now, as (code, message); None when it can."""
    if order.paid:
        return "ORDER_PAID", "order %s is already paid (%s)" % (order.out_trade_no,
                                                                 order.trade_state)
    if order.trade_state == "CLOSED":
        return "ORDER_CLOSED", "order %s is closed" % order.out_trade_no
    if state.prepay_expired(order):
        return "PREPAY_EXPIRED", ("the prepay_id of order %s expired (after %g hours): a new "
                                  "unifiedorder with the same out_trade_no issues a new one"
                                  % (order.out_trade_no, PREPAY_TTL / 3600))
    time_expire = order.fields.get("time_expire")
    if time_expire and beijing(state.clock.now()) >= time_expire:
        return "ORDER_EXPIRED", "order %s expired at time_expire %s" % (order.out_trade_no,
                                                                        time_expire)
    return None


class SimPhoneHandler(BodyLog, SimHandler):
    """POST /sim/orders/<out_trade_no>/phone {"result", "coupon_fee"?, "coupon_type"?}: the
    developer plays the payer's phone from the console (no paySign: the developer pressed the
    button, not a Mini Program). coupon_fee and coupon_type as for /sim/pay (400 when bad).

    result: SUCCESS (paid, notification delivery starts, exactly as /sim/pay), CANCEL
    (nothing changes at WeChat), FAIL (PAYERROR) or USERPAYING. 200 {"out_trade_no",
    "mch_id", "result", "errMsg" (what wx.requestPayment would have answered), "trade_state",
    "transaction_id", "order"}; 404 unknown order; 409 not payable (paid, closed, prepay_id or
    time_expire passed); 403 for a cross-site browser request.
    """

    def post(self, out_trade_no):
        check_same_origin(self)
        data = self.json_body()
        result = data.get("result", "SUCCESS")   # absent: the payer pays; anything else must be a result
        if result not in PAY_RESULTS:
            raise SimError(400, "BAD_FIELD", "result must be one of " + ", ".join(PAY_RESULTS))
        order = self.order_named(out_trade_no)
        try:
            coupon = check_coupon(order, data)
        except ValueError as exc:
            raise SimError(400, "BAD_FIELD", str(exc)) from None
        entry = self.entry = self.state.log_request({
            "time": self.state.clock.now(), "method": "POST", "path": self.request.path,
            "api": "wx.requestPayment (console)", "signature": None, "error": None,
            "out_trade_no": order.out_trade_no, "mch_id": order.mch_id, "result": result},
            wechat=False)
        problem = unpayable(self.state, order)
        if problem is not None:
            entry["error"] = problem[0]
            entry["detail"] = problem[1]
            entry["verdict"] = verdict(entry)
            raise SimError(409, *problem)
        ok, err_msg = play(self.state, self.notifier, order, result, coupon)
        if not ok:
            entry["error"] = err_msg
        entry["verdict"] = verdict(entry)
        self.reply({"out_trade_no": order.out_trade_no, "mch_id": order.mch_id,
                    "result": result, "errMsg": err_msg, "trade_state": order.trade_state,
                    "transaction_id": order.transaction_id, "order": order.to_json()})


def explain_rsa_pay_sign(merchant, appid, data, message):
    """Why a v3 paySign failed: the string to sign, and the mistakes it matches."""
    hints = []
    if data["signType"] != "RSA":
        hints.append("signType is %s but a v3 prepay_id (from /v3/pay/transactions/jsapi) "
                     "needs signType RSA" % data["signType"])
    return explain_rsa_sign(merchant, "paySign", data["paySign"], message, "v3",
                            lambda: rsa_paysign_variants(appid, data, message),
                            "appId\\ntimeStamp\\nnonceStr\\npackage\\n", hints)


def explain_rsa_sign(merchant, field, sign, message, signer, variants, fields, hints=()):
    """Why a SHA256withRSA sign (a v3 paySign, a v3 App call's sign) failed: the string to sign
    and the hints. `signer` says who signs so in v3, `variants()` gives (label, string) for the
    common mistakes, `fields` what is signed."""
    hints = list(hints)
    if len(sign) in (32, 64) and all(c in "0123456789ABCDEFabcdef" for c in sign):
        hints.append("%s is %d hex characters: a v2 %s sign; %s signs with the merchant "
                     "private key (SHA256withRSA, base64)"
                     % (field, len(sign), "MD5" if len(sign) == 32 else "HMAC-SHA256", signer))
    elif v3wire.decode_signature(sign) is None:
        hints.append("%s is not base64" % field)
    elif merchant is not None:
        hints += ["the %s matches when %s" % (field, label) for label, variant in variants()
                  if v3wire.verify(merchant.public_key, variant, sign)]
    if not hints:
        hints.append("no common mistake matched: sign %s with the private key of merchant "
                     "certificate %s" % (fields, merchant.serial_no if merchant else "(none configured)"))
    return {"sign_type": "SHA256withRSA", "string_to_sign": message.decode("utf-8"),
            "received_sign": sign, "hints": hints}


def rsa_paysign_variants(appid, data, message):
    """v3 paySign mistakes: the last \\n left out, package without prepay_id=, fields out of
    order, signType signed too."""
    yield "the last \\n is left out", message[:-1]
    package = data["package"]
    if package.startswith("prepay_id="):
        yield ("package is signed without prepay_id=", v3wire.paysign_message(
            appid, data["timeStamp"], data["nonceStr"], package[len("prepay_id="):]))
    yield ("timeStamp and nonceStr are swapped", v3wire.paysign_message(
        appid, data["nonceStr"], data["timeStamp"], package))
    yield "signType is signed too", message + (data["signType"] + "\n").encode("utf-8")


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
