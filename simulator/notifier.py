"""Notifications POSTed to notify_url and retried on WeChat's schedule: payments (signed XML)
and refunds (encrypted req_info, no sign); in API v3 both as signed JSON with an AES-256-GCM
resource, a fresh signature per attempt."""
import asyncio
import logging

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop
from tornado.simple_httpclient import HTTPTimeoutError

from simulator.bodies import kept
from simulator.rules import NOTIFY_SCHEDULE
from simulator.v2 import notifications as v2notifications, wire as v2wire
from simulator.v3 import notifications as v3notifications

log = logging.getLogger("simulator.notifier")

EXCERPT = 300


class _Payment:
    """A payment notification: what to send about `subject` (an Order), how it is recorded."""
    kind = "payment"
    forged = v2notifications.FORGED

    def __init__(self, order):
        self.subject = order
        self.key = ("payment", order.mch_id, order.out_trade_no)
        self.mch_id, self.url = order.mch_id, order.notify_url

    def body(self, state, mode):
        """(bytes, headers, what the attempt's record adds): whether it carries sign_type is
        mode with_sign_type, or else a draw of state's --notify-sign-type-probability."""
        merchant = state.config.merchants[self.mch_id]
        with_type = mode == "with_sign_type" or state.draw_notify_sign_type()
        fields = v2notifications.payment_fields(self.subject, merchant, mode, with_type)
        return v2wire.to_xml(fields), XML_HEADERS, {"sign_type_field": with_type}

    @staticmethod
    def judge(response):
        return _judge(response)

    def record(self):
        return {"out_trade_no": self.subject.out_trade_no, "mch_id": self.mch_id}

    def extra(self):
        return {"sign_type": self.subject.sign_type}

    def pending_json(self):
        return {"mch_id": self.mch_id, "out_trade_no": self.subject.out_trade_no}


class _Refund(_Payment):
    """A refund notification about `subject` (a Refund): req_info encrypted, no sign."""
    kind = "refund"
    forged = v2notifications.REFUND_FORGED

    def __init__(self, refund):
        self.subject = refund
        self.key = ("refund",) + refund.key
        self.mch_id, self.url = refund.mch_id, refund.notify_url

    def body(self, state, mode):
        merchant = state.config.merchants[self.mch_id]
        fields = v2notifications.refund_fields(self.subject, merchant, mode)
        return v2wire.to_xml(fields), XML_HEADERS, {}

    def record(self):
        refund = self.subject
        return {"out_trade_no": refund.out_trade_no, "mch_id": self.mch_id,
                "out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id}

    def extra(self):
        return {"refund_status": self.subject.refund_status}

    def pending_json(self):
        return {"mch_id": self.mch_id, "out_trade_no": self.subject.out_trade_no,
                "out_refund_no": self.subject.out_refund_no}


class _V3Payment(_Payment):
    """TRANSACTION.SUCCESS of a v3 order: JSON, the transaction encrypted, signed anew on each
    attempt by the key whose turn it is (State.next_v3_signer)."""
    forged = v3notifications.FORGED

    def body(self, state, mode):
        return _v3_body(state, self.mch_id, v3notifications.payment_event(self.subject, mode),
                        mode)

    def extra(self):
        return {"sign_type": "RSA", "api": "v3"}

    @staticmethod
    def judge(response):
        return _judge3(response)


class _V3Refund(_Refund):
    """REFUND.SUCCESS / REFUND.CLOSED / REFUND.ABNORMAL of a v3 refund."""
    forged = v3notifications.FORGED

    def body(self, state, mode):
        order = state.orders.get((self.mch_id, self.subject.out_trade_no))
        event = v3notifications.refund_event(self.subject, order, mode)
        return _v3_body(state, self.mch_id, event, mode)

    def extra(self):
        return {"refund_status": self.subject.refund_status, "api": "v3"}

    @staticmethod
    def judge(response):
        return _judge3(response)


def _v3_body(state, mch_id, event, mode):
    merchant = state.v3.merchant(mch_id)
    kind = state.next_v3_signer()
    body, headers, facts = v3notifications.build(event, merchant.apiv3_key,
                                                 state.v3.signing_key(kind), mode)
    facts["signed_with"] = kind
    return body, headers, facts


def payment_target(order):
    return _V3Payment(order) if order.api == "v3" else _Payment(order)


def refund_target(refund):
    return _V3Refund(refund) if refund.api == "v3" else _Refund(refund)


class Notifier:
    """Delivers notifications without ever blocking the API handlers.

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
        self._tasks = set()
        self._loop = None
        self._closed = False    # after shutdown() nothing is sent any more

    @property
    def http(self):
        # Created lazily, inside the running IOLoop the application serves on.
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True, max_clients=self.max_clients)
        return self._http

    def start(self, order):
        """Begin WeChat's delivery of a freshly paid order: attempt 1 now; none for an order
        whose notifications are lost (POST /sim/orders/<no>/notifications {"deliver": false}),
        recorded as one attempt with outcome "lost"."""
        if order.notify_lost:
            record = payment_target(order).record()
            record.update({"url": order.notify_url, "time": self.state.clock.now(),
                           "attempt": 1, "mode": "auto", "forged": False, "kind": "payment",
                           "outcome": "lost", "error": "notifications of this order are "
                           "lost (POST /sim/orders/<out_trade_no>/notifications)"})
            self.state.log_notification(record)
            return
        self._schedule(payment_target(order), 1, 0.0)

    def start_refund(self, refund):
        """Begin delivery of a settled refund's notification (none without notify_url)."""
        if refund.notify_url:
            self._schedule(refund_target(refund), 1, 0.0)

    def _schedule(self, target, attempt, delay):
        self._cancel(target.key)
        if self._closed:
            return
        self._loop = IOLoop.current()
        handle = self._loop.call_later(delay, self._spawn, target, attempt)
        self._pending[target.key] = (self.state.clock.now() + delay, attempt, handle, target)

    def _spawn(self, target, attempt):
        self._pending.pop(target.key, None)
        task = asyncio.ensure_future(self._scheduled_attempt(target, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scheduled_attempt(self, target, attempt):
        if target.subject.notify_delivered or self._forgotten(target):
            return
        record = await self._send(target, "auto", attempt)
        if record["outcome"] == "success":
            self.state.mark_notified(target.subject)
        elif attempt <= len(NOTIFY_SCHEDULE) and not target.subject.notify_delivered:
            gap = self.state.clock.scaled(NOTIFY_SCHEDULE[attempt - 1])
            record["next_attempt_in"] = gap
            record["next_attempt_at"] = self.state.clock.now() + gap
            self._schedule(target, attempt + 1, gap)
            self.state.changed("notifications")

    async def resend(self, order, mode="normal", count=5):
        """POST /sim/orders/<no>/notify: returns the attempt records.

        Forgeries are single attempts that neither stop nor reschedule real delivery.
        """
        return await self._resend(payment_target(order), mode, count)

    async def resend_refund(self, refund, mode="normal", count=5):
        """POST /sim/refunds/<out_refund_no>/notify: like resend, for a refund."""
        return await self._resend(refund_target(refund), mode, count)

    async def _resend(self, target, mode, count):
        copies = count if mode == "duplicate" else 1
        records = await asyncio.gather(*(self._send(target, mode, n + 1)
                                         for n in range(copies)))
        if mode not in target.forged and any(r["outcome"] == "success" for r in records):
            self.state.mark_notified(target.subject)
            self._cancel(target.key)
        return list(records)

    async def _send(self, target, mode, attempt):
        body, headers, facts = target.body(self.state, mode)
        record = target.record()
        record.update(facts)
        record.update({"url": target.url, "time": self.state.clock.now(), "attempt": attempt,
                       "mode": mode, "forged": mode in target.forged})
        record.update(target.extra())
        record.update({"outcome": "pending", "kind": target.kind,
                       "body_sent": kept(self.state, body, headers.get("Content-Type", ""))})
        self.state.log_notification(record)
        request = HTTPRequest(target.url, method="POST", body=body, headers=dict(headers),
                              connect_timeout=self.timeout, request_timeout=self.timeout)
        record.update(await self._deliver(target, request))
        self.state.changed("notifications")
        return record

    async def _deliver(self, target, request):
        """What the attempt's record learns from its answer (or from its failure)."""
        try:
            response = await self.http.fetch(request, raise_error=False)
        except HTTPTimeoutError as exc:
            return dict(status=None, response="", outcome="timeout", error=str(exc))
        except Exception as exc:  # DNS, refused, closed: any failure is just a failed attempt
            return dict(status=None, response="", outcome="error", error=str(exc))
        return target.judge(response)

    def _forgotten(self, target):
        # After /sim/reset an old order or refund may still have a retry in flight.
        return not self.state.holds(target.subject)

    def reschedule(self):
        """After the clock moved: fire retries whose time has now passed."""
        for key, (due, attempt, handle, target) in list(self._pending.items()):
            if self._forgotten(target):
                self._cancel(key)
                continue
            self._schedule(target, attempt, max(0.0, due - self.state.clock.now()))

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
        """Stop for good: pending retries are cancelled, the HTTP client closed, and nothing
        is scheduled any more (a refund settling afterwards sends nothing)."""
        self._closed = True
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


XML_HEADERS = {"Content-Type": "text/xml"}


def _judge3(response):
    """API v3: HTTP 200 or 204 is success, whatever the body (WeChat ignores it)."""
    text = (response.body or b"").decode("utf-8", "replace")
    result = {"status": response.code, "response": text[:EXCERPT], "outcome": "fail"}
    if response.code == 599:
        result.update(status=None, outcome="error", error=str(response.error))
    elif response.code in (200, 204):
        result["outcome"] = "success"
    else:
        result["error"] = "HTTP %d: v3 wants 200 or 204" % response.code
    return result


def _judge(response):
    """Only an XML reply with return_code SUCCESS counts, as at WeChat."""
    text = (response.body or b"").decode("utf-8", "replace")
    result = {"status": response.code, "response": text[:EXCERPT], "outcome": "fail"}
    if response.code == 599:
        result.update(status=None, outcome="error", error=str(response.error))
        return result
    try:
        reply = v2wire.parse_xml(response.body or b"")
    except v2wire.XMLError as exc:
        result["error"] = "reply is not WeChat XML: %s" % exc.reason
        return result
    if response.code == 200 and reply.get("return_code") == "SUCCESS":
        result["outcome"] = "success"
    return result
