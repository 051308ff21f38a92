"""The console's page per order: GET /sim/console/orders/<no> (HTML) and .../data (JSON): its
state, every request that named it (bodies masked), every notification attempt (the body sent,
the answer), its refunds, its bill lines once its day's bill exists, and what may be done now.

Times are ISO 8601 in Beijing time (+08:00); amounts are integer fen.
"""
import datetime
import json
import os
import re

from simulator import bills
from simulator.models import BEIJING, REFUND_OUTCOMES
from simulator.plane import console
from simulator.plane.control import SimError, SimHandler, notify_modes
from simulator.plane.phone import PAY_RESULTS, unpayable
from simulator.v2 import wire as v2wire

PAGE = os.path.join(console.CONSOLE_DIR, "order.html")      # a Tornado template
OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-|*@]{1,32}$")
ORDER_TIMES = ("created_at", "paid_at", "prepay_expires_at", "h5_link_expires_at")
REFUND_TIMES = ("created_at", "due_at", "settled_at")


def iso(ts):
    """A POSIX time as ISO 8601 in Beijing time; None for 0 (not yet)."""
    if not ts:
        return None
    return datetime.datetime.fromtimestamp(ts, BEIJING).isoformat(timespec="seconds")


def with_iso(data, names):
    data.update({name: iso(data.get(name)) for name in names})
    return data


def order_view(state, order):
    data = with_iso(console.order_json(state, order), ORDER_TIMES)
    data["version"] = order.api
    del data["refunds"]                 # in the page's own "refunds", with their attempts
    if data["phone"]:
        data["phone"] = dict(data["phone"], time=iso(data["phone"]["time"]))
    return data


def identifiers(order):
    """Every number that names the order or one of its refunds."""
    found = {order.out_trade_no, order.prepay_id, order.transaction_id}
    for refund in order.refunds:
        found.update((refund.out_refund_no, refund.refund_id))
    return found - {""}


def fields_of(text):
    """(name, value) of every field of a v2 XML or JSON body ([] for any other text)."""
    text = (text or "").strip()
    try:
        if text.startswith("<"):
            return list(v2wire.parse_xml(text.encode("utf-8")).items())
        if text.startswith("{"):
            return list(leaves(json.loads(text)))
    except (v2wire.XMLError, ValueError):
        pass
    return []


def leaves(value, name=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item, name)
    elif isinstance(value, str):
        yield name, value


def names(entry):
    """(the numbers a request-log entry names, the merchant it names or None): its path's
    segments, its bodies' field values (a package's prepay_id=...), its out_trade_no."""
    found = set(entry["path"].split("/")) | {entry.get("out_trade_no")}
    request = fields_of(entry.get("request_body"))
    for _, value in request + fields_of(entry.get("answer_body")):
        found.add(value)
        found.update(re.split(r"[=&]", value) if "=" in value else ())
    merchant = dict(request).get("mch_id") or dict(request).get("mchid") or entry.get("mchid")
    return found, merchant


def names_order(entry, order, ids):
    haystack = "%s %s %s %s" % (entry["path"], entry.get("out_trade_no"),
                                entry.get("request_body"), entry.get("answer_body"))
    if not any(i in haystack for i in ids):         # cheap: most entries name other orders
        return False
    found, merchant = names(entry)
    return bool(found & ids) and merchant in (None, order.mch_id)


def request_view(entry):
    data = dict(entry, id=entry["seq"], at=iso(entry["time"]))
    del data["seq"], data["time"]
    return data


def attempt_view(record, due):
    data = dict(record, id=record["seq"], at=iso(record["time"]),
                answer=record.get("response", ""), next_retry_at=iso(due))
    for name in ("seq", "time", "response", "next_attempt_at"):
        data.pop(name, None)
    return data


def attempts(state, notifier, order, kind, out_refund_no=None):
    """The order's (or one refund's) notification attempts, oldest first, each with when its
    retry is due (None when none is pending for it)."""
    due = {console.pending_key(p): p for p in notifier.pending()}
    out = []
    for record in list(state.notifications):
        if (record.get("kind") != kind or record.get("mch_id") != order.mch_id
                or record.get("out_trade_no") != order.out_trade_no
                or record.get("out_refund_no") != out_refund_no):
            continue
        waiting = due.get(console.pending_key(record))
        scheduled = (record.get("mode") == "auto" and waiting is not None
                     and waiting["attempt"] == record.get("attempt", 0) + 1)
        out.append(attempt_view(record, waiting["due"] if scheduled else None))
    return out


def refund_view(state, notifier, order, refund):
    data = with_iso(console.refund_json(refund), REFUND_TIMES)
    data["status"] = refund.refund_status
    data["notifications"] = attempts(state, notifier, order, "refund", refund.out_refund_no)
    return data


def bill_lines(state, order):
    """The rows of the bills (ALL) that name the order: its payment's and its refunds', from
    the bills of the days that have ended."""
    if not order.transaction_id:
        return []
    times = [order.paid_at] + [r.created_at for r in order.refunds]
    days = sorted({datetime.datetime.fromtimestamp(t, BEIJING).date() for t in times})
    lines = []
    for day in days:
        try:
            text = bills.of_state(state, order.mch_id, day, "ALL")
        except bills.NoBill:
            continue
        lines += [line for line in text.split(bills.CRLF)
                  if "`" + order.out_trade_no in line.split(",")]
    return lines


def actions(state, order):
    """What the console's phone and control plane may do with the order now."""
    problem = unpayable(state, order)
    modes, forged = notify_modes(order, "payment")
    return {
        "pay": problem is None, "cancel": problem is None,
        "phone_results": list(PAY_RESULTS) if problem is None else [],
        "unpayable": None if problem is None else {"code": problem[0], "message": problem[1]},
        "resend_modes": list(modes if order.paid else forged), "forged_modes": list(forged),
        "refund_outcomes": list(REFUND_OUTCOMES),
        "next_refund_outcome": order.refund_outcome or "SUCCESS",
        "refundable_fee": order.total_fee - order.refunded_fee if order.paid else 0,
        "settle_refunds": [r.out_refund_no for r in order.refunds
                           if r.refund_status == "PROCESSING"],
        "deliver_notifications": not order.notify_lost,
    }


def order_data(state, notifier, order):
    """Everything the order's page shows, in one read (it changes nothing)."""
    ids = identifiers(order)
    return {
        "revision": state.revision,
        "order": order_view(state, order),
        "requests": [request_view(e) for e in list(state.requests) if names_order(e, order, ids)],
        "notifications": attempts(state, notifier, order, "payment"),
        "refunds": [refund_view(state, notifier, order, r) for r in order.refunds],
        "bill_lines": bill_lines(state, order),
        "actions": actions(state, order),
    }


class OrderHandler(SimHandler):
    def order(self, out_trade_no):
        """The order by that number (?mch_id= when several merchants have it); 404 for an
        unknown order or a number no order can have."""
        if not OUT_TRADE_NO.match(out_trade_no):
            raise SimError(404, "ORDER_NOT_FOUND", "no order %s: an out_trade_no is 1..32 of "
                           "0-9 a-z A-Z _ - | * @" % out_trade_no[:64])
        return self.order_named(out_trade_no)


class OrderPageHandler(OrderHandler):
    """GET /sim/console/orders/<out_trade_no>: the order's page (a template)."""

    def get(self, out_trade_no):
        order = self.order(out_trade_no)
        console.page_headers(self)
        self.render(PAGE, out_trade_no=order.out_trade_no, mch_id=order.mch_id,
                    host=self.request.host, protocol=self.request.protocol)


class OrderDataHandler(OrderHandler):
    """GET /sim/console/orders/<out_trade_no>/data: what the order's page shows (JSON)."""

    def get(self, out_trade_no):
        self.set_header("Cache-Control", "no-store")
        self.reply(order_data(self.state, self.notifier, self.order(out_trade_no)))
