"""make_app(state): the simulator's tornado Application, routes and notifier."""
import logging

import tornado.httpserver
import tornado.web

from simulator import handlers as h
from simulator.notifier import Notifier
from simulator.state import check_refund_delay

# Every WeChat path answers below /, /sandboxnew/ and /xdc/apiv2sandbox/, slash or not.
PREFIX = r"(?P<prefix>/sandboxnew|/xdc/apiv2sandbox)?"
IDLE_TIMEOUT = 120.0     # seconds a connection may wait for (the end of) its next request head
BODY_TIMEOUT = 60.0      # seconds for a request body
MAX_HEADER_BYTES = 64 * 1024


class SimHTTPServer(tornado.httpserver.HTTPServer):
    """Counts accepted connections into the state's stats (GET /sim/stats)."""

    def handle_stream(self, stream, address):
        self.request_callback.sim_state.stats["connections_accepted"] += 1
        return super().handle_stream(stream, address)


class SimApplication(tornado.web.Application):
    """An Application whose listen() caps request bodies (WeChat answers are small too)."""

    def listen(self, port, address=None, backlog=1024, **kwargs):
        # a deep accept queue: a burst of new connections must not wait for SYN retries
        server = make_server(self, **kwargs)
        server.listen(port, address or "", backlog=backlog)
        return server


def make_server(app, **kwargs):
    """The simulator's HTTP server for app (bodies capped, connections counted)."""
    kwargs.setdefault("max_body_size", h.MAX_BODY)
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


def routes(state, notifier):
    deps = {"state": state, "notifier": notifier}
    wechat = [
        (PREFIX + r"/pay/unifiedorder/?", h.UnifiedOrderHandler),
        (PREFIX + r"/pay/orderquery/?", h.OrderQueryHandler),
        (PREFIX + r"/pay/closeorder/?", h.CloseOrderHandler),
        (PREFIX + r"/secapi/pay/refund/?", h.RefundHandler),
        (PREFIX + r"/pay/refundquery/?", h.RefundQueryHandler),
        (r"/sandboxnew/pay/getsignkey/?", h.GetSignKeyHandler),
        (h.GETSIGNKEY_XDC + "/?", h.GetSignKeyHandler),
        (PREFIX + r"/sns/jscode2session/?", h.Code2SessionHandler),
        (PREFIX + r"/cgi-bin/token/?", h.TokenHandler),
    ]
    control = [
        (r"/sim/login", h.SimLoginHandler),
        (r"/sim/pay", h.SimPayHandler),
        (r"/sim/orders", h.SimOrdersHandler),
        (r"/sim/orders/([^/]+)", h.SimOrderHandler),
        (r"/sim/orders/([^/]+)/notify", h.SimNotifyHandler),
        (r"/sim/orders/([^/]+)/refund-outcome", h.SimRefundOutcomeHandler),
        (r"/sim/refunds", h.SimRefundsHandler),
        (r"/sim/refunds/([^/]+)", h.SimRefundHandler),
        (r"/sim/refunds/([^/]+)/notify", h.SimRefundNotifyHandler),
        (r"/sim/notifications", h.SimNotificationsHandler),
        (r"/sim/requests", h.SimRequestsHandler),
        (r"/sim/faults", h.SimFaultsHandler),
        (r"/sim/faults/([^/]+)", h.SimFaultHandler),
        (r"/sim/clock", h.SimClockHandler),
        (r"/sim/reset", h.SimResetHandler),
        (r"/sim/config", h.SimConfigHandler),
        (r"/sim/stats", h.SimStatsHandler),
    ]
    return [(pattern, handler, deps) for pattern, handler in wechat + control]


def make_app(state, notify_timeout=5.0, refund_delay=None, client_certs=None):
    """The Application; its notifier (app.sim_notifier) delivers on the current IOLoop.

    refund_delay: seconds (WeChat time, scaled by the state's time scale) a refund stays
    PROCESSING; None keeps the state's (State(refund_delay=...), default 5).
    client_certs: whether /secapi/ requires a verified client certificate. None (default):
    on requests that came over TLS (HTTPServer(ssl_options=simulator.tls.server_context(..)))
    yes, over plain HTTP no; True: always (plain HTTP is then refused); False: never.
    """
    if refund_delay is not None:
        state.refund_delay = check_refund_delay(refund_delay)
    notifier = Notifier(state, timeout=notify_timeout)
    app = SimApplication(routes(state, notifier), default_handler_class=h.NotFoundHandler,
                         log_function=log_request, sim_client_certs=client_certs)
    app.sim_state = state
    app.sim_notifier = notifier
    return app
