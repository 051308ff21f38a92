"""Payment notifications: signed XML POSTed to notify_url, retried on WeChat's schedule."""
import asyncio
import logging
import random
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop
from tornado.simple_httpclient import HTTPTimeoutError

from simulator import protocol
from simulator.state import NOTIFY_SCHEDULE, beijing

log = logging.getLogger("simulator.notifier")

MODES = ("normal", "duplicate", "bad_sign", "wrong_amount")
FORGED = ("bad_sign", "wrong_amount")
EXCERPT = 300


def notification_fields(order, merchant, mode="normal"):
    """The notification of a paid order, signed with the order's sign type.

    Like real WeChat it carries no sign_type field, so a receiver that assumes MD5
    fails on HMAC-SHA256 orders.
    """
    paid = _payment_facts(order)
    fields = {
        "appid": order.appid, "bank_type": paid["bank_type"], "cash_fee": str(order.total_fee),
        "fee_type": order.fields.get("fee_type") or "CNY", "is_subscribe": "N",
        "mch_id": order.mch_id, "nonce_str": protocol.nonce(), "openid": order.openid,
        "out_trade_no": order.out_trade_no, "result_code": "SUCCESS", "return_code": "SUCCESS",
        "time_end": paid["time_end"], "total_fee": str(order.total_fee),
        "trade_type": order.fields["trade_type"], "transaction_id": paid["transaction_id"],
    }
    if order.fields.get("attach"):
        fields["attach"] = order.fields["attach"]
    if mode == "wrong_amount":
        # A forgery after a key leak: correctly signed, but not the order's amount.
        fields["total_fee"] = fields["cash_fee"] = str(order.total_fee + 1)
    key = merchant.key(order.sandbox)
    fields["sign"] = protocol.sign(fields, key, order.sign_type)
    if mode == "bad_sign":  # signed, but not with the merchant's key
        fields["sign"] = protocol.sign(fields, protocol.nonce(), order.sign_type)
    return fields


def _payment_facts(order):
    """The order's payment, or made-up facts for a forgery about an unpaid order."""
    if order.transaction_id:
        return {"bank_type": order.bank_type, "time_end": order.time_end,
                "transaction_id": order.transaction_id}
    return {"bank_type": "OTHERS", "time_end": beijing(time.time()),
            "transaction_id": "4200" + "".join(random.choice("0123456789") for _ in range(24))}


class Notifier:
    """Delivers notifications without ever blocking the API handlers.

    Its own AsyncHTTPClient (force_instance) keeps a slow notify_url from using up the
    connections of any other client in the process.
    """

    def __init__(self, state, timeout=5.0, max_clients=64):
        self.state = state
        self.timeout = timeout
        self.max_clients = max_clients
        self._http = None
        self._pending = {}      # order key -> (due clock time, attempt, IOLoop handle)
        self._tasks = set()
        self._loop = None

    @property
    def http(self):
        # Created lazily, inside the running IOLoop the application serves on.
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True, max_clients=self.max_clients)
        return self._http

    def start(self, order):
        """Begin WeChat's delivery of a freshly paid order: attempt 1 now."""
        self._schedule(order, 1, 0.0)

    def _schedule(self, order, attempt, delay):
        key = (order.mch_id, order.out_trade_no)
        self._cancel(key)
        self._loop = IOLoop.current()
        handle = self._loop.call_later(delay, self._spawn, order, attempt)
        self._pending[key] = (self.state.clock.now() + delay, attempt, handle)

    def _spawn(self, order, attempt):
        self._pending.pop((order.mch_id, order.out_trade_no), None)
        task = asyncio.ensure_future(self._scheduled_attempt(order, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scheduled_attempt(self, order, attempt):
        if order.notify_delivered or self._forgotten(order):
            return
        record = await self._send(order, "auto", attempt)
        if record["outcome"] == "success":
            order.notify_delivered = True
        elif attempt <= len(NOTIFY_SCHEDULE) and not order.notify_delivered:
            gap = self.state.clock.scaled(NOTIFY_SCHEDULE[attempt - 1])
            record["next_attempt_in"] = gap
            self._schedule(order, attempt + 1, gap)

    def _forgotten(self, order):
        # After /sim/reset an old order object may still have a retry in flight.
        return self.state.orders.get((order.mch_id, order.out_trade_no)) is not order

    async def resend(self, order, mode="normal", count=5):
        """POST /sim/orders/<no>/notify: returns the attempt records.

        Forgeries are single attempts that neither stop nor reschedule real delivery.
        """
        copies = count if mode == "duplicate" else 1
        records = await asyncio.gather(*(self._send(order, mode, n + 1) for n in range(copies)))
        if mode not in FORGED and any(r["outcome"] == "success" for r in records):
            order.notify_delivered = True
            self._cancel((order.mch_id, order.out_trade_no))
        return list(records)

    async def _send(self, order, mode, attempt):
        merchant = self.state.config.merchants[order.mch_id]
        body = protocol.to_xml(notification_fields(order, merchant, mode))
        record = {"out_trade_no": order.out_trade_no, "mch_id": order.mch_id,
                  "url": order.notify_url, "time": self.state.clock.now(), "attempt": attempt,
                  "mode": mode, "forged": mode in FORGED, "sign_type": order.sign_type,
                  "outcome": "pending"}
        self.state.notifications.append(record)
        request = HTTPRequest(order.notify_url, method="POST", body=body,
                              headers={"Content-Type": "text/xml"},
                              connect_timeout=self.timeout, request_timeout=self.timeout)
        try:
            response = await self.http.fetch(request, raise_error=False)
        except HTTPTimeoutError as exc:
            record.update(status=None, response="", outcome="timeout", error=str(exc))
            return record
        except Exception as exc:  # DNS, refused, closed: any failure is just a failed attempt
            record.update(status=None, response="", outcome="error", error=str(exc))
            return record
        record.update(_judge(response))
        return record

    def reschedule(self):
        """After the clock moved: fire retries whose due time has now passed."""
        for key, (due, attempt, handle) in list(self._pending.items()):
            order = self.state.orders.get(key)
            if order is None:
                self._cancel(key)
                continue
            self._schedule(order, attempt, max(0.0, due - self.state.clock.now()))

    def _cancel(self, key):
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._loop.remove_timeout(pending[2])

    def cancel_all(self):
        """Forget every pending retry and in-flight attempt (/sim/reset)."""
        for key in list(self._pending):
            self._cancel(key)
        for task in list(self._tasks):
            task.cancel()

    def shutdown(self):
        """Stop for good: pending retries are cancelled and the HTTP client closed."""
        self.cancel_all()
        if self._http is not None:
            self._http.close()
            self._http = None

    def pending(self):
        return [{"mch_id": k[0], "out_trade_no": k[1], "due": due, "attempt": attempt}
                for k, (due, attempt, _) in self._pending.items()]


def _judge(response):
    """Only an XML reply with return_code SUCCESS counts, as at WeChat."""
    text = (response.body or b"").decode("utf-8", "replace")
    result = {"status": response.code, "response": text[:EXCERPT], "outcome": "fail"}
    if response.code == 599:
        result.update(status=None, outcome="error", error=str(response.error))
        return result
    try:
        reply = protocol.parse_xml(response.body or b"")
    except protocol.XMLError as exc:
        result["error"] = "reply is not WeChat XML: %s" % exc.reason
        return result
    if response.code == 200 and reply.get("return_code") == "SUCCESS":
        result["outcome"] = "success"
    return result
