"""The /sim/ control plane: orders, refunds and their outcomes, notifications, the request
log, fault rules, the clock, reset, stats and config; JSON in and out (the phone's two calls,
/sim/login and /sim/pay, are in phone.py)."""
import dataclasses
import json
import logging
import math

import tornado.web

from simulator import payurls
from simulator.digits import parse_int
from simulator.endpoint import FAULT_KINDS, WECHAT_APIS, canonical_api
from simulator.models import REFUND_OUTCOMES, REFUND_STATUSES
from simulator.v2.notifications import FORGED, MODES, REFUND_FORGED, REFUND_MODES
from simulator.v3 import notifications as v3notifications

log = logging.getLogger("simulator")
MAX_LIMIT = 100000      # ?limit= and the console's ?requests= / ?notifications=


class SimError(tornado.web.HTTPError):
    """A control-plane error, answered as JSON {"error": {"code", "message"}}."""

    def __init__(self, status, code, message):
        super().__init__(status)
        self.code, self.message = code, message


class SimHandler(tornado.web.RequestHandler):
    """The /sim/ control plane: JSON in and out, 4xx JSON for bad input, never a traceback."""

    allow_cross_origin = False   # /sim/login and /sim/pay: a Mini Program in DevTools calls them

    def initialize(self, state, notifier, settlement):
        self.state, self.notifier, self.settlement = state, notifier, settlement

    def prepare(self):
        # another web page the developer visits must not reset, fault or drive the simulator
        if self.request.method not in ("GET", "HEAD", "OPTIONS") and not self.allow_cross_origin:
            check_same_origin(self)

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

    def int_argument(self, name, default, high=MAX_LIMIT):
        """?name= as an integer 0..high (default when absent); 400 BAD_FIELD otherwise."""
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        value = parse_int(text, high)
        if value is None:
            raise SimError(400, "BAD_FIELD", "%s must be an integer 0..%d" % (name, high))
        return value

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


def check_same_origin(handler):
    """Refuse a browser's cross-site request (another web page POSTing to 127.0.0.1): its
    Origin header names another host. Clients that send no Origin (curl, SDKs) pass."""
    origin = handler.request.headers.get("Origin")
    if origin is None:
        return
    host = getattr(payurls.split_url(origin), "netloc", "")    # "null", no URL: no host
    if host.lower() != handler.request.host.lower():
        raise SimError(403, "CROSS_ORIGIN", "a request from the web page %s may not drive the "
                       "simulator (only its own console may)" % origin)


def number(data, name, default=None, low=None, high=None):
    """A finite JSON number within [low, high]; SimError otherwise."""
    value = data.get(name, default)
    # an int is compared exactly: math.isfinite() raises OverflowError past float's range
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and (isinstance(value, int) or math.isfinite(value)) and (low is None or value >= low)
          and (high is None or value <= high))
    if not ok:
        raise SimError(400, "BAD_FIELD", "%s must be a number between %s and %s"
                       % (name, low, high))
    return value


class NotFoundHandler(tornado.web.RequestHandler):
    """Any other path: 404 in the control plane's JSON shape."""

    def prepare(self):
        self.set_status(404)
        self.finish({"error": {"code": "NOT_FOUND",
                               "message": "no such path: %s" % self.request.path}})


class ForeignHostHandler(tornado.web.RequestHandler):
    """/sim/ under a Host name that is not the simulator's (simulator.hosts.ForeignHost): a page
    whose name was rebound to this address is same-origin with itself, so Origin cannot tell."""

    def prepare(self):
        self.set_status(403)
        self.finish({"error": {"code": "HOST_NOT_ALLOWED", "message": (
            "Host %s is not a name of this simulator: /sim/ answers loopback names, the "
            "address it listens on and names allowed with run_simulator.py --allow-host "
            "(run_server.py --simulator-allow-host)" % self.request.host[:100])}})


class SimOrdersHandler(SimHandler):
    def get(self):
        self.reply({"orders": [o.to_json() for o in self.state.orders.values()]})


class SimOrderHandler(SimHandler):
    def get(self, out_trade_no):
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
        self.state.set_refund_outcome(order, status)
        self.reply({"out_trade_no": order.out_trade_no, "mch_id": order.mch_id,
                    "next_refund_outcome": status})


class SimRefundsHandler(SimHandler):
    """GET /sim/refunds[?out_trade_no=&mch_id=&status=]: every refund the simulator holds."""

    def get(self):
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
        self.reply(self.refund_named(out_refund_no).to_json())

    def post(self, out_refund_no):
        status = refund_status(self.json_body(), REFUND_OUTCOMES)
        refund = self.refund_named(out_refund_no)
        if refund.refund_status != "PROCESSING":
            raise SimError(409, "ALREADY_SETTLED", "refund %s is already %s"
                           % (out_refund_no, refund.refund_status))
        self.settlement.settle(refund, status)
        self.reply(refund.to_json())


def notify_modes(record, kind):
    """(modes, forged) of a payment ("payment") or refund ("refund") notification: v3's for
    a v3 order or refund, else v2's."""
    if record.api == "v3":
        return v3notifications.MODES, v3notifications.FORGED
    return (MODES, FORGED) if kind == "payment" else (REFUND_MODES, REFUND_FORGED)


def resend_request(data, record, kind):
    """A resend's {"mode"?, "count"?} for an order or refund: (mode, count, its forged modes)."""
    modes, forged = notify_modes(record, kind)
    mode = data.get("mode") or "normal"
    if mode not in modes:
        raise SimError(400, "BAD_FIELD", "mode must be one of " + ", ".join(modes))
    return mode, number(data, "count", 5, 1, 50), forged


class SimRefundNotifyHandler(SimHandler):
    """POST /sim/refunds/<out_refund_no>/notify {"mode"?, "count"?}: resend (or forge)."""

    async def post(self, out_refund_no):
        data = self.json_body()
        refund = self.refund_named(out_refund_no)
        mode, count, forged = resend_request(data, refund, "refund")
        if refund.refund_status == "PROCESSING" and mode not in forged:
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
        mode, count, forged = resend_request(data, order, "payment")
        # Forgeries may claim an unpaid order was paid: that is the attack to refuse.
        if not order.paid and mode not in forged:
            raise SimError(409, "NOT_PAID", "order %s is %s: only paid orders are notified (the forgeries "
                           "%s work on any order)" % (out_trade_no, order.trade_state, ", ".join(forged)))
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
        limit = self.int_argument("limit", None)
        if limit is not None:
            entries = entries[-limit:] if limit else []
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
        self.reply({"deleted": self.state.clear_faults()})


class SimFaultHandler(SimHandler):
    """DELETE /sim/faults/<id>: remove one rule."""

    def delete(self, fault_id):
        if not self.state.delete_fault(fault_id):
            raise SimError(404, "FAULT_NOT_FOUND", "no fault %s" % fault_id)
        self.reply({"deleted": 1})


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
        self.state.advance_clock(number(data, "advance", None, 0, 10 ** 9))
        self.settlement.clock_moved()
        self.notifier.reschedule()
        self.reply(self.clock_json())

    def clock_json(self):
        clock = self.state.clock
        return {"now": clock.now(), "offset": clock.offset, "time_scale": clock.time_scale}


class SimResetHandler(SimHandler):
    def post(self):
        self.settlement.cancel_all()
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
                    "refund_delay": self.state.refund_delay,
                    "v3": v3_summary(self.state.v3)})


def v3_summary(v3):
    """The v3 keys in a few public facts (None without v3)."""
    if v3 is None:
        return None
    return {"key_mode": v3.key_mode, "mchids": list(v3.merchants),
            "merchant_serial_nos": {m.mchid: m.serial_no for m in v3.merchants.values()},
            "wechatpay_public_key_id": v3.public_key_id,
            "platform_serial_no": v3.platform_serial}


class SimV3KeysHandler(SimHandler):
    """GET /sim/v3/keys: WeChat's public key (and its PUB_KEY_ID_), the platform certificate,
    the merchant's serial and the files the simulator wrote; public material only."""

    def get(self):
        if self.state.v3 is None:
            raise SimError(404, "NO_V3", "this simulator was started without API v3 keys")
        self.reply(self.state.v3.public_json())
