"""make_app(state): the simulator's tornado Application: its routes, notifier and settlement."""
import logging

import tornado.httpserver
import tornado.routing
import tornado.web

from simulator import login_api
from simulator.endpoint import GETSIGNKEY_XDC
from simulator.hosts import ForeignHost, HostPolicy
from simulator.notifier import Notifier
from simulator.plane import bills as planebills, console, control, health, pay, phone
from simulator.plane.events import Events
from simulator.rules import MAX_BODY
from simulator.settlement import Settlement
from simulator.v2 import api as v2api, bills as v2bills
from simulator.v3 import api as v3api, bills as v3bills, kinds as v3kinds

# Every WeChat path answers below /, /sandboxnew/ and /xdc/apiv2sandbox/, slash or not.
PREFIX = r"(?P<prefix>/sandboxnew|/xdc/apiv2sandbox)?"
IDLE_TIMEOUT = 120.0     # seconds a connection may wait for (the end of) its next request head
BODY_TIMEOUT = 60.0      # seconds for a request body
MAX_HEADER_BYTES = 64 * 1024


class SimHTTPServer(tornado.httpserver.HTTPServer):
    """Counts accepted connections into the state's stats (GET /sim/stats)."""

    def handle_stream(self, stream, address):
        self.request_callback.sim_state.count_connection()
        return super().handle_stream(stream, address)


class SimApplication(tornado.web.Application):
    """An Application whose listen() caps request bodies (WeChat answers are small too).

    sim_state, sim_notifier, sim_settlement and sim_events (the console's push channel) are
    the simulator's parts; shutdown() stops its timers, deliveries and event streams.
    """

    def listen(self, port, address=None, backlog=1024, **kwargs):
        # a deep accept queue: a burst of new connections must not wait for SYN retries
        server = make_server(self, **kwargs)
        server.listen(port, address or "", backlog=backlog)
        return server

    def shutdown(self):
        """Stop for good: no refund settles and no notification is sent any more."""
        self.sim_settlement.cancel_all()
        self.sim_notifier.shutdown()
        self.sim_events.shutdown()


def make_server(app, **kwargs):
    """The simulator's HTTP server for app (bodies capped, connections counted)."""
    kwargs.setdefault("max_body_size", MAX_BODY)
    # Tornado's defaults let a connection idle, or trickle its headers, for an hour
    kwargs.setdefault("idle_connection_timeout", IDLE_TIMEOUT)
    kwargs.setdefault("body_timeout", BODY_TIMEOUT)
    kwargs.setdefault("max_header_size", MAX_HEADER_BYTES)
    return SimHTTPServer(app, **kwargs)


def log_request(handler):
    """Access log without query strings: jscode2session carries the AppSecret in its query."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    logging.getLogger("simulator.access").log(
        level, "%d %s %s %.2fms", status, handler.request.method, handler.request.path,
        1000.0 * handler.request.request_time())


def routes(state, notifier, settlement):
    deps = {"state": state, "notifier": notifier, "settlement": settlement}
    wechat = [
        (PREFIX + r"/pay/unifiedorder/?", v2api.UnifiedOrderHandler),
        (PREFIX + r"/pay/orderquery/?", v2api.OrderQueryHandler),
        (PREFIX + r"/pay/closeorder/?", v2api.CloseOrderHandler),
        (PREFIX + r"/secapi/pay/refund/?", v2api.RefundHandler),
        (PREFIX + r"/pay/refundquery/?", v2api.RefundQueryHandler),
        (PREFIX + r"/pay/downloadbill/?", v2bills.DownloadBillHandler),
        (r"/sandboxnew/pay/getsignkey/?", v2api.GetSignKeyHandler),
        (GETSIGNKEY_XDC + "/?", v2api.GetSignKeyHandler),
        (PREFIX + r"/sns/jscode2session/?", login_api.Code2SessionHandler),
        (PREFIX + r"/cgi-bin/token/?", login_api.TokenHandler),
    ]
    if state.v3 is not None:
        wechat += v3api.routes() + v3kinds.routes() + v3bills.routes()
    sim = [
        (r"/sim/login", phone.SimLoginHandler),
        (r"/sim/pay", pay.SimPayHandler),
        (r"/sim/orders", control.SimOrdersHandler),
        (r"/sim/orders/([^/]+)", control.SimOrderHandler),
        (r"/sim/orders/([^/]+)/notify", control.SimNotifyHandler),
        (r"/sim/orders/([^/]+)/phone", phone.SimPhoneHandler),
        (r"/sim/orders/([^/]+)/refund-outcome", control.SimRefundOutcomeHandler),
        (r"/sim/orders/([^/]+)/notifications", planebills.SimOrderNotificationsHandler),
        (r"/sim/orders/([^/]+)/refunds", planebills.SimOrderRefundsHandler),
        (r"/sim/bills/([^/]+)", planebills.SimBillsHandler),
        (r"/sim/refunds", control.SimRefundsHandler),
        (r"/sim/refunds/([^/]+)", control.SimRefundHandler),
        (r"/sim/refunds/([^/]+)/notify", control.SimRefundNotifyHandler),
        (r"/sim/notifications", control.SimNotificationsHandler),
        (r"/sim/requests", control.SimRequestsHandler),
        (r"/sim/faults", control.SimFaultsHandler),
        (r"/sim/faults/([^/]+)", control.SimFaultHandler),
        (r"/sim/clock", control.SimClockHandler),
        (r"/sim/reset", control.SimResetHandler),
        (r"/sim/config", control.SimConfigHandler),
        (r"/sim/stats", control.SimStatsHandler),
        (r"/sim/v3/keys", control.SimV3KeysHandler),
        (r"/sim/health", health.SimHealthHandler),
    ]
    return [(pattern, handler, deps) for pattern, handler in wechat + sim] + console.routes(deps)


def make_app(state, notify_timeout=5.0, refund_delay=None, client_certs=None,
             listen_host="127.0.0.1", allow_hosts=(), pay_version="v2"):
    """The Application; its notifier (app.sim_notifier) delivers and its settlement
    (app.sim_settlement) settles refunds on the current IOLoop.

    refund_delay: seconds (WeChat time, scaled by the state's time scale) a refund stays
    PROCESSING; None keeps the state's (State(refund_delay=...), default 5).
    client_certs: whether /secapi/ requires a verified client certificate. None (default):
    on requests that came over TLS (HTTPServer(ssl_options=simulator.tls.server_context(..)))
    yes, over plain HTTP no; True: always (plain HTTP is then refused); False: never.
    listen_host, allow_hosts: besides loopback names, the Host names /sim/ answers under
    (simulator.hosts.HostPolicy; ValueError for a malformed name); others get 403.
    pay_version: the API whose settings the simulator was started to give (GET /sim/health).
    """
    hosts = HostPolicy(listen_host, allow_hosts)
    if refund_delay is not None:
        state.set_refund_delay(refund_delay)
    notifier = Notifier(state, timeout=notify_timeout)
    settlement = Settlement(state, notifier)
    # first: no /sim/ handler sees a request under a foreign Host
    foreign = tornado.routing.Rule(ForeignHost(hosts), control.ForeignHostHandler)
    app = SimApplication([foreign] + routes(state, notifier, settlement),
                         default_handler_class=control.NotFoundHandler,
                         log_function=log_request, sim_client_certs=client_certs,
                         sim_pay_version=pay_version)
    app.sim_state = state
    app.sim_hosts = hosts
    app.sim_notifier = notifier
    app.sim_settlement = settlement
    app.sim_events = Events(state)
    return app
