"""Notifications POSTed to notify_url and retried on WeChat's schedule: payments (signed XML)
and refunds (encrypted req_info, no sign); also the timers that settle refunds."""
import asyncio
import logging
import random
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop
from tornado.simple_httpclient import HTTPTimeoutError

from simulator import protocol, refunds
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


class _Payment:
    """A payment notification: what to send, and how its attempts are recorded."""
    kind = "payment"
    modes, forged = MODES, FORGED

    def __init__(self, order):
        self.order = order
        self.key = ("payment", order.mch_id, order.out_trade_no)
        self.mch_id, self.url = order.mch_id, order.notify_url

    @property
    def delivered(self):
        return self.order.notify_delivered

    @delivered.setter
    def delivered(self, value):
        self.order.notify_delivered = value

    def forgotten(self, state):
        # After /sim/reset an old order object may still have a retry in flight.
        return state.orders.get((self.order.mch_id, self.order.out_trade_no)) is not self.order

    def body(self, merchant, mode):
        return protocol.to_xml(notification_fields(self.order, merchant, mode))

    def record(self):
        return {"out_trade_no": self.order.out_trade_no, "mch_id": self.order.mch_id}

    def extra(self):
        return {"sign_type": self.order.sign_type}

    def pending_json(self):
        return {"mch_id": self.order.mch_id, "out_trade_no": self.order.out_trade_no}


class _Refund(_Payment):
    """A refund notification: req_info encrypted, no sign (protocol.md 7)."""
    kind = "refund"
    modes, forged = refunds.REFUND_MODES, refunds.REFUND_FORGED

    def __init__(self, refund):
        self.refund = refund
        self.key = ("refund",) + refund.key
        self.mch_id, self.url = refund.mch_id, refund.notify_url

    @property
    def delivered(self):
        return self.refund.notify_delivered

    @delivered.setter
    def delivered(self, value):
        self.refund.notify_delivered = value

    def forgotten(self, state):
        return state.refunds.get(self.refund.key) is not self.refund

    def body(self, merchant, mode):
        return protocol.to_xml(refunds.notification_fields(self.refund, merchant, mode))

    def record(self):
        return {"out_trade_no": self.refund.out_trade_no, "mch_id": self.refund.mch_id,
                "out_refund_no": self.refund.out_refund_no, "refund_id": self.refund.refund_id}

    def extra(self):
        return {"refund_status": self.refund.refund_status}

    def pending_json(self):
        return {"mch_id": self.refund.mch_id, "out_trade_no": self.refund.out_trade_no,
                "out_refund_no": self.refund.out_refund_no}


class Notifier:
    """Delivers notifications, and settles refunds when they are due, without ever blocking
    the API handlers.

    Payment and refund notifications share WeChat's retry schedule and the SUCCESS-reply
    rule. Its own AsyncHTTPClient (force_instance) keeps a slow notify_url from using up the
    connections of any other client in the process.
    """

    def __init__(self, state, timeout=5.0, max_clients=64):
        self.state = state
        self.timeout = timeout
        self.max_clients = max_clients
        self._http = None
        self._pending = {}      # target key -> (due clock time, attempt, IOLoop handle, target)
        self._settling = {}     # refund key -> (IOLoop handle, loop): PROCESSING refunds
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
        self._schedule(_Payment(order), 1, 0.0)

    def start_refund(self, refund):
        """Begin delivery of a settled refund's notification (none without notify_url)."""
        if refund.notify_url:
            self._schedule(_Refund(refund), 1, 0.0)

    def _schedule(self, target, attempt, delay):
        self._cancel(target.key)
        self._loop = IOLoop.current()
        handle = self._loop.call_later(delay, self._spawn, target, attempt)
        self._pending[target.key] = (self.state.clock.now() + delay, attempt, handle, target)

    def _spawn(self, target, attempt):
        self._pending.pop(target.key, None)
        task = asyncio.ensure_future(self._scheduled_attempt(target, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scheduled_attempt(self, target, attempt):
        if target.delivered or target.forgotten(self.state):
            return
        record = await self._send(target, "auto", attempt)
        if record["outcome"] == "success":
            target.delivered = True
        elif attempt <= len(NOTIFY_SCHEDULE) and not target.delivered:
            gap = self.state.clock.scaled(NOTIFY_SCHEDULE[attempt - 1])
            record["next_attempt_in"] = gap
            self._schedule(target, attempt + 1, gap)

    async def resend(self, order, mode="normal", count=5):
        """POST /sim/orders/<no>/notify: returns the attempt records.

        Forgeries are single attempts that neither stop nor reschedule real delivery.
        """
        return await self._resend(_Payment(order), mode, count)

    async def resend_refund(self, refund, mode="normal", count=5):
        """POST /sim/refunds/<out_refund_no>/notify: like resend, for a refund."""
        return await self._resend(_Refund(refund), mode, count)

    async def _resend(self, target, mode, count):
        copies = count if mode == "duplicate" else 1
        records = await asyncio.gather(*(self._send(target, mode, n + 1)
                                         for n in range(copies)))
        if mode not in target.forged and any(r["outcome"] == "success" for r in records):
            target.delivered = True
            self._cancel(target.key)
        return list(records)

    async def _send(self, target, mode, attempt):
        merchant = self.state.config.merchants[target.mch_id]
        body = target.body(merchant, mode)
        record = target.record()
        record.update({"url": target.url, "time": self.state.clock.now(), "attempt": attempt,
                       "mode": mode, "forged": mode in target.forged})
        record.update(target.extra())
        record.update({"outcome": "pending", "kind": target.kind})
        self.state.notifications.append(record)
        request = HTTPRequest(target.url, method="POST", body=body,
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

    # --- refund settlement -------------------------------------------------------
    def schedule_settlement(self, refund):
        """A freshly accepted refund settles (to refund.outcome) once refund.due_at passes."""
        self._cancel_settlement(refund.key)
        loop = IOLoop.current()
        delay = max(0.0, refund.due_at - self.state.clock.now())
        self._settling[refund.key] = (loop.call_later(delay, self._settle_timer, refund), loop)

    def _settle_timer(self, refund):
        self._settling.pop(refund.key, None)
        if refund.refund_status == "PROCESSING" and not _Refund(refund).forgotten(self.state):
            self.settle(refund, refund.outcome)
        self.settle_due()

    def settle(self, refund, status):
        """Settle one PROCESSING refund now and start its notification."""
        self._cancel_settlement(refund.key)
        self.state.settle_refund(refund, status)
        self.start_refund(refund)

    def settle_due(self):
        """Settle every refund whose time has come (after the clock moved, before reads)."""
        for refund in self.state.due_refunds():
            self.settle(refund, refund.outcome)

    def _cancel_settlement(self, key):
        pending = self._settling.pop(key, None)
        if pending is not None:
            pending[1].remove_timeout(pending[0])

    def reschedule(self):
        """After the clock moved: fire retries and settlements whose time has now passed."""
        self.settle_due()
        for refund in self.state.pending_refunds():
            self.schedule_settlement(refund)
        for key, (due, attempt, handle, target) in list(self._pending.items()):
            if target.forgotten(self.state):
                self._cancel(key)
                continue
            self._schedule(target, attempt, max(0.0, due - self.state.clock.now()))

    def _cancel(self, key):
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._loop.remove_timeout(pending[2])

    def cancel_all(self):
        """Forget every pending retry, settlement and in-flight attempt (/sim/reset)."""
        for key in list(self._pending):
            self._cancel(key)
        for key in list(self._settling):
            self._cancel_settlement(key)
        for task in list(self._tasks):
            task.cancel()

    def shutdown(self):
        """Stop for good: pending retries are cancelled and the HTTP client closed."""
        self.cancel_all()
        if self._http is not None:
            self._http.close()
            self._http = None

    def pending(self):
        out = []
        for due, attempt, _, target in self._pending.values():
            entry = target.pending_json()
            entry.update(due=due, attempt=attempt, kind=target.kind)
            out.append(entry)
        return out


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
