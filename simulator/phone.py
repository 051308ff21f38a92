"""The phone: wx.login (POST /sim/login) and wx.requestPayment (POST /sim/pay) played, with
paySign checked as WeChat's client checks it."""
from simulator import protocol
from simulator.control import SimError, SimHandler
from simulator.endpoint import verdict
from simulator.models import beijing
from simulator.rules import CODE_TTL, PREPAY_TTL

PAY_RESULTS = ("SUCCESS", "CANCEL", "FAIL", "USERPAYING")


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
    """wx.requestPayment's fail callback: an HTTP status and WeChat's errMsg."""

    def __init__(self, status, err_msg):
        super().__init__(err_msg)
        self.status, self.err_msg = status, err_msg


class SimPayHandler(SimHandler):
    """POST /sim/pay: plays wx.requestPayment, checking paySign as WeChat's client does."""
    fields = ("timeStamp", "nonceStr", "package", "signType", "paySign")

    def post(self):
        data = self.json_body()
        self.entry = self.state.log_request({
            "time": self.state.clock.now(), "method": "POST", "path": "/sim/pay",
            "api": "wx.requestPayment", "signature": None, "error": None}, wechat=False)
        try:
            order = self.checked_order(data)
            self.reply(self.pay(order, data.get("result") or "SUCCESS"))
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
            raise PaymentFail(400, "requestPayment:fail prepay_id expired (%g hours)"
                              % (PREPAY_TTL / 3600))
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

    def pay(self, order, result):
        if result == "CANCEL":
            raise PaymentFail(400, "requestPayment:fail cancel")
        if result == "FAIL":
            self.state.payment_failed(order)
            raise PaymentFail(400, "requestPayment:fail simulated payment failure (PAYERROR)")
        if result == "USERPAYING":
            self.state.payment_pending(order)
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
