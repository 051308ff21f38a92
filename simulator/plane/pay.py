"""POST /sim/pay: the phone paying any order, one handler that reads the body's fields once and
calls the one payer for them: wx.requestPayment's (JSAPI, phone.py), a scanned code_url, an
opened mweb_url or h5_url, or an App's call (scan.py for API v2's orders, pay3.py for v3's:
the url or prepayid names the order, and so its version)."""
from simulator.plane import phone
from simulator.plane.pay3 import KIND_NAMES, V3Payer, prepay_named
from simulator.plane.phone import PAY_RESULTS, PaymentFail, js_type
from simulator.plane.scan import V2Payer

FAIL = "requestPayment:fail "


def payer_of(state, data):
    """(trade_type, field, api version) of a /sim/pay body; ("JSAPI", None, None) for
    wx.requestPayment's fields. A code_url or App call is v3's when it names a v3 order, else
    v2's (whose checks say what is wrong with it); an App call names its order by prepayid (or
    prepay_id, see app_call_fields), and without partnerid only a v3 order's."""
    if "code_url" in data:
        return "NATIVE", "code_url", version(state, "code_url", data["code_url"])
    if "h5_url" in data:
        return "MWEB", "h5_url", "v3"
    if "mweb_url" in data:
        return "MWEB", "mweb_url", "v2"
    if "prepayid" in data and version(state, "prepayid", data["prepayid"]) == "v3":
        return "APP", "prepayid", "v3"
    if "partnerid" in data:
        return "APP", "prepayid", "v2"
    return "JSAPI", None, None


def app_call_fields(data):
    """The body with an App call's prepay_id (a common misspelling of APP调起支付's prepayid,
    taken for both versions) as prepayid; other bodies as they are."""
    if "partnerid" in data and "prepayid" not in data and "prepay_id" in data:
        data = dict(data, prepayid=data["prepay_id"])
        del data["prepay_id"]
    return data


def version(state, field, value):
    """"v3" when value (a code_url or prepayid) names a v3 order, else "v2"."""
    order = state.by_prepay.get(prepay_named(field, value) or "") \
        if isinstance(value, str) else None
    return "v3" if order is not None and order.api == "v3" else "v2"


class SimPayHandler(V3Payer, V2Payer, phone.SimPayHandler):
    """POST /sim/pay for every kind of order: see payer_of for which payer a body goes to."""
    kind = None     # the trade_type paid outside a Mini Program (v2 or v3): its answer names it

    def checked_order(self, data):
        data = app_call_fields(data)
        trade_type, field, api = payer_of(self.state, data)
        if api is None:
            return self.jsapi_order(super().checked_order(data))
        if data.get("result", "SUCCESS") not in PAY_RESULTS:
            raise PaymentFail(400, FAIL + "result must be one of " + ", ".join(PAY_RESULTS))
        if field != "prepayid" and not isinstance(data[field], str):
            raise PaymentFail(400, FAIL + "parameter error: parameter.%s should be String "
                              "instead of %s;" % (field, js_type(data[field])))
        self.kind = trade_type
        if api == "v3":
            return self.v3_kind_order(field, data)
        return self.v2_kind_order(trade_type, data)

    def jsapi_order(self, order):
        """wx.requestPayment pays JSAPI orders only: a v3 prepay_id of another kind is its
        App's, code_url's or h5_url's to pay."""
        ordered_as = order.fields.get("trade_type") or "JSAPI"
        if order.api == "v3" and ordered_as != "JSAPI":
            raise PaymentFail(400, FAIL + "package names %s order, not a JSAPI one"
                              % KIND_NAMES[ordered_as])
        return order

    def pay(self, order, result, coupon=(0, "")):
        out = super().pay(order, result, coupon)
        if self.kind:
            out["trade_type"] = self.kind
        return out
