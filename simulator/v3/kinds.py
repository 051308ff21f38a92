"""API v3's Native, App and H5 orders: created as JSAPI's are (the same fields but payer, the
same repeat rules), then queried, closed, refunded and notified by the same endpoints; each
answers what its payer's phone needs instead of JSAPI's prepay_id for wx.requestPayment."""
from simulator.endpoint import V3_KIND_APIS
from simulator.v3 import wire as v3wire
from simulator.v3.api import JsapiHandler

NATIVE, APP, H5 = V3_KIND_APIS


class NativeHandler(JsapiHandler):
    """Native下单, POST /v3/pay/transactions/native -> 200 {"code_url"}: WeChat documents no
    payer (whoever scans the QR code pays) and a code_url that lives 2 hours."""
    api = NATIVE
    trade_type = "NATIVE"

    def created(self, order):
        return {"code_url": v3wire.code_url(order.prepay_id)}


class AppHandler(JsapiHandler):
    """APP下单, POST /v3/pay/transactions/app -> 200 {"prepay_id"}: no payer; the App hands
    the prepay_id to the WeChat SDK with a sign over appid\\ntimestamp\\nnoncestr\\nprepayid\\n
    (APP调起支付, checked by /sim/pay)."""
    api = APP
    trade_type = "APP"


class H5Handler(JsapiHandler):
    """H5下单, POST /v3/pay/transactions/h5 -> 200 {"h5_url"}: scene_info (payer_client_ip,
    h5_info.type) required (v3rules.check_scene); its trade_type in queries and notifications
    is MWEB; the h5_url lives 5 minutes (v3rules.H5_URL_TTL)."""
    api = H5
    trade_type = "MWEB"

    def created(self, order):
        return {"h5_url": v3wire.h5_url(order.prepay_id)}


def routes():
    """(pattern, handler) of the three create paths."""
    return [(r"/v3/pay/transactions/native/?", NativeHandler),
            (r"/v3/pay/transactions/app/?", AppHandler),
            (r"/v3/pay/transactions/h5/?", H5Handler)]
