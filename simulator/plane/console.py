"""The console: a web page at /sim/console (a development tool, served by the simulator where it
listens) that shows and drives fake WeChat: orders and the phone, refunds, notification
attempts, the request log with signature explanations, faults, the clock, the configuration.

Its page and static files (simulator/plane/web/) are plain HTML, CSS and JavaScript: no
framework, no build step, no URL outside the simulator. The page reads GET /sim/console/state
(one snapshot of everything, read-only) when GET /sim/console/events (events.py) says the
state changed, and acts through the /sim/ control plane; each order has a page (orderpage.py).
"""
import dataclasses
import os

import tornado.web

from simulator.bodies import mask_secret
from simulator.endpoint import FAULT_KINDS, WECHAT_APIS
from simulator.plane.control import SimHandler, notify_modes, v3_summary
from simulator.plane.phone import unpayable
from simulator.rules import CODE_TTL, NOTIFY_SCHEDULE, PREPAY_TTL

CONSOLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
PAGE = os.path.join(CONSOLE_DIR, "index.html")          # a Tornado template
STATIC_DIR = os.path.join(CONSOLE_DIR, "static")
REQUEST_LIMIT = 200         # request-log entries in a snapshot (newest)
NOTIFICATION_LIMIT = 300    # notification attempts in a snapshot (newest)

# Served with the page: nothing may come from anywhere but the simulator itself. 'unsafe-eval'
# only lets browser-test drivers evaluate their own expressions (Playwright's
# wait_for_function); the console's script never evaluates strings.
CSP = ("default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml", ".png": "image/png"}


def masked_config(config):
    """The apps and merchants with their secrets masked."""
    return {"apps": [{"appid": a.appid, "secret_masked": mask_secret(a.secret)}
                     for a in config.apps.values()],
            "merchants": [{"mch_id": m.mch_id, "appids": list(m.appids),
                           "api_key_masked": mask_secret(m.api_key),
                           "sandbox_key_masked": mask_secret(m.sandbox_key)}
                          for m in config.merchants.values()]}


def order_json(state, order):
    """An order as GET /sim/orders shows it, plus what the console's phone may do with it."""
    data = order.to_json()
    problem = unpayable(state, order)
    data["payable"] = problem is None
    data["unpayable"] = None if problem is None else {"code": problem[0], "message": problem[1]}
    data["time_expire"] = order.fields.get("time_expire") or ""
    data["prepay_expired"] = state.prepay_expired(order)
    data["phone"] = state.phone_results.get((order.mch_id, order.out_trade_no))
    data["resend_modes"], data["forged_modes"] = (list(m) for m in notify_modes(order, "payment"))
    return data


def refund_json(refund):
    """A refund as GET /sim/refunds shows it, plus the notification modes it may resend."""
    data = refund.to_json()
    data["resend_modes"] = list(notify_modes(refund, "refund")[0])
    return data


def pending_key(entry):
    return (entry.get("kind"), entry.get("mch_id"), entry.get("out_trade_no"),
            entry.get("out_refund_no") if entry.get("kind") == "refund" else None)


def without_bodies(records, names):
    """The snapshot's rows: bodies are on the order's page (and in /sim/requests)."""
    return [{k: v for k, v in r.items() if k not in names} for r in records]


def notifications_json(state, pending, limit):
    """The newest attempts first; each with next_retry_at: when its retry is due, None when
    none is pending (delivered, resent, reset, or the schedule ran out)."""
    due = {pending_key(p): p for p in pending}
    records = list(state.notifications)[-limit:] if limit else []
    out = []
    for record in reversed(records):
        data = dict(record)
        waiting = due.get(pending_key(record))
        scheduled = (record.get("mode") == "auto" and waiting is not None
                     and waiting["attempt"] == record.get("attempt", 0) + 1)
        data["next_retry_at"] = waiting["due"] if scheduled else None
        out.append(data)
    return out


def snapshot(state, notifier, request_limit=REQUEST_LIMIT, notification_limit=NOTIFICATION_LIMIT,
             bodies=False):
    """Everything the console shows, in one read (it changes nothing); bodies: whether the
    requests and notification attempts keep their bodies."""
    clock = state.clock
    pending = notifier.pending()
    requests = list(state.requests)[-request_limit:] if request_limit else []
    orders = sorted(state.orders.values(), key=lambda o: o.created_at, reverse=True)
    refunds = sorted(state.refunds.values(), key=lambda r: r.created_at, reverse=True)
    requests, notifications = (list(reversed(requests)),
                               notifications_json(state, pending, notification_limit))
    if not bodies:
        requests = without_bodies(requests, ("request_body", "answer_body"))
        notifications = without_bodies(notifications, ("body_sent",))
    return {
        "revision": state.revision,
        "clock": {"now": clock.now(), "offset": clock.offset, "time_scale": clock.time_scale},
        "ttl": {"code": clock.scaled(CODE_TTL), "prepay": clock.scaled(PREPAY_TTL),
                "first_retry": clock.scaled(NOTIFY_SCHEDULE[0])},
        "orders": [order_json(state, o) for o in orders],
        "refunds": [refund_json(r) for r in refunds],
        "refund_delay": state.refund_delay,
        "refund_delay_scaled": clock.scaled(state.refund_delay),
        "notifications": notifications,
        "pending": pending,
        "requests": requests,
        "faults": [dataclasses.asdict(f) for f in state.faults],
        "config": dict(masked_config(state.config), v3=v3_summary(state.v3)),
        "stats": {"connections_accepted": state.stats["connections_accepted"],
                  "wechat_requests": state.stats["wechat_requests"]},
        "seed": state.seed,
    }


class ConsolePageHandler(SimHandler):
    """GET /sim/console: the page (a template: the WeChat paths and fault kinds in the form,
    and the address it was reached at)."""

    def get(self):
        page_headers(self)
        self.render(PAGE, host=self.request.host,
                    protocol=self.request.protocol, paths=WECHAT_APIS, kinds=FAULT_KINDS)


def page_headers(handler):
    """A console page's headers: its strict CSP, no referrer, revalidated."""
    handler.set_header("Content-Security-Policy", CSP)
    handler.set_header("Referrer-Policy", "no-referrer")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Cache-Control", "no-cache")


class ConsoleStateHandler(SimHandler):
    """GET /sim/console/state[?requests=N&notifications=N&bodies=1]: the console's snapshot."""

    def get(self):
        self.set_header("Cache-Control", "no-store")
        self.reply(snapshot(self.state, self.notifier,
                            self.int_argument("requests", REQUEST_LIMIT),
                            self.int_argument("notifications", NOTIFICATION_LIMIT),
                            bool(self.int_argument("bodies", 0, 1))))


class ConsoleStaticHandler(tornado.web.StaticFileHandler):
    """/sim/console/static/<file>: the page's CSS and JavaScript, always revalidated."""

    def get_content_type(self):
        ext = os.path.splitext(self.absolute_path)[1]
        return CONTENT_TYPES.get(ext) or super().get_content_type()

    def set_extra_headers(self, path):
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")


def routes(deps):
    from simulator.plane import events, orderpage    # they build on this module
    return [
        (r"/sim/console/?", ConsolePageHandler, deps),
        (r"/sim/console/state", ConsoleStateHandler, deps),
        (r"/sim/console/events", events.EventsHandler, deps),
        (r"/sim/console/orders/([^/]+)", orderpage.OrderPageHandler, deps),
        (r"/sim/console/orders/([^/]+)/data", orderpage.OrderDataHandler, deps),
        (r"/sim/console/static/(.*)", ConsoleStaticHandler, {"path": STATIC_DIR}),
    ]
