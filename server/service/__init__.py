"""Business rules: login, server-priced orders, payment params, notify, reconcile, close, refunds.

No HTTP here (server/http/ translates), no wire format (server/wechat/), no SQL
(the Store); which state may follow which is server/domain.py's table.
"""
import collections
import datetime
import hashlib
import logging
import re
import secrets
import string
import sys
import time

from server import domain, numbers
from server.wechat.v2 import wire as wxpay
from server.domain import (CHANGE, CLOSED, FAILED, NOTPAY, ORDER, PAID, PAYABLE, PAYERROR, PENDING, PROCESSING,
                           REFUND, REFUND_KIND, REFUND_OPEN, REFUND_OUTCOMES, REFUNDCLOSE, SUCCESS, Order, Refund)
from server.store import RefundRefused, StoreError
from server.wechat import NotificationRefused, UpstreamError, WeChatError, WeChatRefused

log = logging.getLogger("server.service")

PREPAY_TTL = 7200          # WeChat keeps a prepay_id for 2 hours
PREPAY_SAFETY_MARGIN = 600  # never hand out one with less than 10 minutes left
RECONCILE_AFTER = 60        # an unpaid order older than this is checked with orderquery
RECONCILE_EVERY = 10        # ... but not more often than this
SWEEP_MAX_AGE = PREPAY_TTL + 3600  # the background sweep stops asking about older orders
SWEEP_BATCH = 100
RESEND_MARGIN = 5           # seconds past the longest a refund call can take (every attempt timing out)
MAX_QUANTITY = 99
MAX_TOTAL_FEE = 2 ** 31 - 1  # WeChat's total_fee is a 32-bit integer
BODY_MAX_BYTES = 127
LOGIN_REFUSALS = {40029, 40163, 40226}
SESSION_CACHE = 10000       # sessions kept in memory (LRU)
MAX_REFUNDS = 50            # WeChat's limit of partial refunds per order
REFUND_DESC_MAX = 80
_OUT_TRADE_NO_ALPHABET = string.ascii_letters + string.digits
_CODE = re.compile(r"[!-~]+")  # wx.login codes: printable ASCII, no spaces or controls
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_TRADE_NO = re.compile(r"[^/]{1,32}")
_STAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_REFUND_REFUSALS = {
    "not_paid": (409, "ORDER_NOT_PAID", "only a paid order can be refunded"),
    "amount": (409, "REFUND_EXCEEDS_PAID", "the refunds would exceed what was paid"),
    "count": (409, "TOO_MANY_REFUNDS", "an order takes at most %d refunds" % MAX_REFUNDS),
    "conflict": (409, "REFUND_NO_CONFLICT", "this out_refund_no was used for another refund"),
}
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))
_ORDER_STATE = {"CLOSED": CLOSED, "REVOKED": CLOSED, "PAYERROR": PAYERROR}  # orderquery trade_state -> ours
_V3_REFUND_EVENTS = {"REFUND.SUCCESS": SUCCESS, "REFUND.CLOSED": REFUNDCLOSE, "REFUND.ABNORMAL": CHANGE}


class ServiceError(Exception):
    """An answer for the API caller: HTTP status, error code, message, WeChat's code."""

    def __init__(self, status, code, message, wechat_code=None, extra=None):
        super().__init__(message)
        self.status, self.code, self.message, self.wechat_code = status, code, message, wechat_code
        self.extra = extra or {}  # more fields for the error object (e.g. out_refund_no)


class Service:
    def __init__(self, config, store, wechat, catalog, clock=time.time):
        self.config = config
        self.store = store
        self.wechat = wechat
        self.catalog = catalog
        self.clock = clock
        # token hash -> Session; sessions never change once issued, so a cache is safe
        self._sessions = collections.OrderedDict()

    # -- login -------------------------------------------------------------------
    async def login(self, code):
        """Exchange a wx.login code for an opaque session token (session_key stays here)."""
        session = await self.code2session(code)
        token = secrets.token_urlsafe(32)
        ttl = self.config.session_ttl
        await self.store.create_session(_token_hash(token), session["openid"],
                                        session["session_key"], self.clock() + ttl)
        return {"token": token, "expires_in": ttl}

    async def code2session(self, code):
        """WeChat's answer for a wx.login code; 401 LOGIN_FAILED when WeChat refuses it."""
        if not (isinstance(code, str) and 0 < len(code) <= 128 and _CODE.fullmatch(code)):
            raise ServiceError(400, "INVALID_CODE", "code must be the string from wx.login")
        try:
            return await self.wechat.code2session(code)
        except WeChatRefused as exc:
            if exc.wechat_code in LOGIN_REFUSALS:
                raise ServiceError(401, "LOGIN_FAILED", "WeChat refused the login code",
                                   exc.wechat_code) from None
            raise

    async def caller(self, token, code=None):
        """The openid of a request: its session token, or (the one-call flow, only without a
        token) a wx.login code exchanged on the spot."""
        if token is None and code is not None:
            return (await self.code2session(code))["openid"]
        return await self.authenticate(token)

    async def authenticate(self, token):
        """The openid behind a session token; 401 when unknown or expired."""
        if token:
            key = _token_hash(token)
            session = self._sessions.get(key) or await self.store.get_session(key, self.clock())
            if session and session.expires_at > self.clock():
                self._remember(key, session)
                return session.openid
        raise ServiceError(401, "UNAUTHORIZED", "missing, unknown or expired session token")

    def _remember(self, key, session):
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        if len(self._sessions) > SESSION_CACHE:
            self._sessions.popitem(last=False)

    # -- orders ------------------------------------------------------------------
    async def create_order(self, openid, product_id, quantity=1, idempotency_key=None):
        """Price the order from the catalog, store it, get a prepay_id. Returns (order, payment)."""
        product = self.catalog.get(product_id)
        if product is None:
            raise ServiceError(400, "UNKNOWN_PRODUCT", "product_id is not in the catalog")
        _whole(quantity, MAX_QUANTITY, "INVALID_QUANTITY", "quantity must be an integer from 1 to %d" % MAX_QUANTITY)
        _check_idempotency_key(idempotency_key)
        if product.price * quantity > MAX_TOTAL_FEE:
            raise ServiceError(400, "INVALID_QUANTITY", "the total would be over WeChat's limit of %d fen" % MAX_TOTAL_FEE)
        now = self.clock()
        order, created = await self.store.insert_order(Order(
            out_trade_no=new_out_trade_no(now), openid=openid, product_id=product.id,
            quantity=quantity, body=cut_utf8(product.name, BODY_MAX_BYTES),
            total_fee=product.price * quantity, sign_type=self.config.sign_type, status=NOTPAY,
            idempotency_key=idempotency_key, created_at=now, updated_at=now))
        if not created and (order.product_id, order.quantity) != (product.id, quantity):
            raise ServiceError(409, "IDEMPOTENCY_KEY_REUSED",
                               "this Idempotency-Key was used for a different order")
        if created:
            log.debug("order %s created: %s x%d = %d fen", order.out_trade_no, product.id, quantity, order.total_fee)
        elif order.status not in PAYABLE:
            return order, None  # a replay after the order was paid or closed: nothing to pay
        return await self._payable(order)

    async def get_order(self, openid, out_trade_no, refresh=False):
        """The caller's order, reconciled with orderquery when asked or when it is stale."""
        order = await self._own_order(openid, out_trade_no)
        if order.status in PAYABLE and (refresh or self._stale(order)):
            try:
                order = await self.reconcile(order)
            except WeChatError:
                if refresh:
                    raise
                log.warning("order %s: background reconciliation failed: %s", out_trade_no,
                            sys.exc_info()[1])
        return order

    async def list_orders(self, openid, limit, before=None):
        """The caller's orders, newest first: ([order], next cursor or None). No WeChat call."""
        orders = await self.store.list_orders(openid, limit + 1, read_cursor(before, _TRADE_NO))
        return _page(orders, limit, "out_trade_no")

    async def repay(self, openid, out_trade_no):
        """Fresh wx.requestPayment params for an unpaid order. Returns (order, payment)."""
        order = await self._own_order(openid, out_trade_no)
        _require_unpaid(order)
        return await self._payable(order)

    async def close(self, openid, out_trade_no):
        """closeorder at WeChat, then CLOSED here; 409 when the order turns out paid."""
        order = await self._own_order(openid, out_trade_no)
        if order.status == CLOSED:
            return order
        _require_unpaid(order)
        try:
            await self.wechat.close_order(out_trade_no)
        except WeChatRefused as exc:
            if exc.wechat_code == "ORDERPAID":
                order = await self.reconcile(order)
                raise ServiceError(409, "ORDER_PAID", "the order is already paid") from None
            if exc.wechat_code not in ("ORDERCLOSED", "ORDERNOTEXIST"):
                raise
        changed, order = await self.store.transition(out_trade_no, domain.sources(ORDER, CLOSED), CLOSED, "close")
        if not changed and order.status != CLOSED:
            raise ServiceError(409, "ORDER_PAID", "the order was paid meanwhile")
        log.info("order %s closed", out_trade_no)
        return order

    async def _own_order(self, openid, out_trade_no):
        order = await self.store.get_order(out_trade_no) if _plausible_trade_no(out_trade_no) else None
        if order is None or not secrets.compare_digest(order.openid, openid):
            # another user's order is indistinguishable from a missing one
            raise ServiceError(404, "ORDER_NOT_FOUND", "no such order")
        return order

    def _stale(self, record):
        """An order or refund old enough, and not checked recently, to ask WeChat about."""
        now = self.clock()
        return (now - record.created_at > RECONCILE_AFTER
                and now - (record.checked_at or 0) > RECONCILE_EVERY)

    # -- payment params ----------------------------------------------------------
    async def _payable(self, order):
        """Make sure the order has a live prepay_id; return (order, requestPayment params)."""
        now = self.clock()
        if order.prepay_id and order.prepay_expires_at - now > PREPAY_SAFETY_MARGIN:
            return order, self.payment_params(order.prepay_id, order.sign_type)
        try:
            prepay_id = await self.wechat.prepay(order)
        except WeChatRefused as exc:
            if exc.wechat_code in ("ORDERPAID", "ORDERCLOSED", "ORDER_EXPIRED"):
                await self.reconcile(order)
                raise ServiceError(409, exc.wechat_code, "the order is no longer payable") from None
            raise
        # WeChat answers a repeat with the same prepay_id while it is valid: its expiry stands
        expires_at = order.prepay_expires_at if prepay_id == order.prepay_id else now + PREPAY_TTL
        paid_order = await self.store.set_prepay(order.out_trade_no, prepay_id, expires_at)
        if paid_order is None:
            raise ServiceError(409, "ORDER_NOT_PAYABLE", "the order is no longer unpaid")
        return paid_order, self.payment_params(prepay_id, order.sign_type)

    def payment_params(self, prepay_id, sign_type):
        """wx.requestPayment's five fields, paySign computed by the client (v2: MD5 or
        HMAC-SHA256 with the API key; v3: RSA with the merchant's key) and nowhere else."""
        return self.wechat.payment_params(prepay_id, sign_type, int(self.clock()))

    # -- notifications -----------------------------------------------------------
    async def handle_notify(self, body):
        """Verify and apply a payment notification. Returns the XML reply for WeChat."""
        try:
            params = wxpay.from_xml(body)
        except wxpay.XMLError as exc:
            log.warning("notify refused: %s", exc)
            return wxpay.fail_reply("invalid XML")
        if params.get("return_code") != "SUCCESS":
            log.warning("notify with return_code=%r ignored", params.get("return_code", "")[:16])
            return wxpay.fail_reply("return_code is not SUCCESS")
        out_trade_no = params.get("out_trade_no", "")
        order = await self.store.get_order(out_trade_no) if _plausible_trade_no(out_trade_no) else None
        problem = self._notify_problem(params, order)
        if problem:
            log.warning("notify for %r refused: %s", out_trade_no[:64], problem)
            return wxpay.fail_reply(problem)
        if params.get("result_code") != "SUCCESS":
            log.info("order %s: WeChat reports a failed payment (%s)", out_trade_no, params.get("err_code"))
            return wxpay.SUCCESS_REPLY
        problem = await self._record_payment(order, params)
        return wxpay.fail_reply(problem) if problem else wxpay.SUCCESS_REPLY

    async def _record_payment(self, order, params):
        """The one transition to SUCCESS for a believed notification; a problem or None."""
        changed, order = await self._apply_paid(order, params, "notify")
        if not changed and order.transaction_id != params.get("transaction_id"):
            log.error("order %s: notification with a different transaction_id, not applied", order.out_trade_no)
            return "transaction_id does not match"
        if not changed:
            log.info("order %s: notification repeated, already %s", order.out_trade_no, order.status)
        return None

    def _notify_problem(self, params, order):
        """Why a notification cannot be trusted for this order, or None."""
        if order is None:
            return "unknown order"
        if not self.config.api_key or order.sign_type not in wxpay.SIGN_TYPES:
            # v3 mode without a v2 key, or an order paid through v3: nothing to verify a v2 sign with
            return "v2 notifications are not accepted for this order"
        declared = params.get("sign_type")
        if declared is not None and declared != order.sign_type:
            return "sign_type %s does not match the order's %s" % (declared[:16], order.sign_type)
        if not wxpay.verify(params, self.config.api_key, order.sign_type):
            return "signature mismatch"
        if params.get("appid") != self.config.appid or params.get("mch_id") != self.config.mch_id:
            return "appid or mch_id does not match"
        if params.get("result_code") == "SUCCESS":
            return _paid_problem(params, order)
        return None

    async def _apply_paid(self, order, params, source):
        """The one transition to SUCCESS, recording transaction_id and time_end."""
        changed, order = await self.store.transition(
            order.out_trade_no, domain.sources(ORDER, SUCCESS), SUCCESS, source,
            transaction_id=params["transaction_id"], time_end=params.get("time_end", ""))
        if changed:
            log.info("order %s paid (%s, transaction %s)", order.out_trade_no, source, order.transaction_id)
        return changed, order

    # -- reconciliation ----------------------------------------------------------
    async def reconcile(self, order):
        """Bring an order in line with orderquery; the same transitions as notify."""
        try:
            answer = await self.wechat.order_query(order.out_trade_no)
        except WeChatRefused as exc:
            if exc.wechat_code != "ORDERNOTEXIST":
                raise
            await self.store.mark_checked(order.out_trade_no, self.clock())
            return await self.store.get_order(order.out_trade_no)
        state = answer.get("trade_state")
        if state in PAID:
            problem = _paid_problem(answer, order)
            if problem:
                raise UpstreamError("orderquery for %s: %s" % (order.out_trade_no, problem))
            return (await self._apply_paid(order, answer, "orderquery"))[1]
        target = _ORDER_STATE.get(state)
        if target and target != order.status:
            return (await self.store.transition(order.out_trade_no, domain.sources(ORDER, target), target,
                                                "orderquery"))[1]
        await self.store.mark_checked(order.out_trade_no, self.clock())
        return await self.store.get_order(order.out_trade_no)

    # -- refunds (admin) ---------------------------------------------------------
    async def refund(self, out_trade_no, refund_fee, reason=None, out_refund_no=None, idempotency_key=None):
        """Store a refund (PENDING), then ask WeChat. Safe to retry with the same Idempotency-Key
        or out_refund_no: a refund still PENDING is sent again, and WeChat refunds one
        out_refund_no once. Every answer once it is stored names it, errors included."""
        _check_refund_input(refund_fee, reason, out_refund_no)
        _check_idempotency_key(idempotency_key)
        order = await self._any_order(out_trade_no)
        wanted = self._new_refund(order, refund_fee, reason, out_refund_no, idempotency_key)
        try:
            refund = await self._store_refund(order, wanted)
        except StoreError as exc:
            # it may be stored all the same (a commit whose answer was lost): without a key,
            # its number is the caller's one handle on it
            raise _refund_failure(exc, wanted.out_refund_no, named=not idempotency_key) from None
        if refund.status != PENDING:
            return refund  # a retry of a refund WeChat has already answered
        try:
            return await self._submit_refund(order, refund)
        except Exception as exc:  # whatever it is, the caller must learn which refund to retry
            raise _refund_failure(exc, refund.out_refund_no) from None

    def _new_refund(self, order, refund_fee, reason, out_refund_no, idempotency_key):
        now = self.clock()
        return Refund(out_refund_no=out_refund_no or "R" + new_out_trade_no(now)[:31], out_trade_no=order.out_trade_no,
                      refund_fee=refund_fee, reason=reason or "", status=PENDING, idempotency_key=idempotency_key,
                      created_at=now, updated_at=now)

    async def _store_refund(self, order, wanted):
        """The refund as stored: `wanted`, or the one its Idempotency-Key or out_refund_no
        already names. 409 when the store refuses it or the key was used for another refund."""
        try:
            refund, created = await self.store.insert_refund(wanted, MAX_REFUNDS)
        except RefundRefused as exc:
            status, code, message = _REFUND_REFUSALS[exc.reason]
            if exc.reason == "amount":
                left = domain.refundable_fee(order, await self.store.refunds_of(order.out_trade_no))
                message = "%s: %d fen is left to refund" % (message, left)
            raise ServiceError(status, code, message) from None
        if not created and (refund.out_trade_no, refund.refund_fee) != (wanted.out_trade_no, wanted.refund_fee):
            raise ServiceError(409, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a refund of "
                               "another order or amount")
        return refund

    async def _submit_refund(self, order, refund):
        try:
            answer = await self.wechat.refund(
                out_trade_no=order.out_trade_no, out_refund_no=refund.out_refund_no,
                total_fee=order.total_fee, refund_fee=refund.refund_fee,
                refund_desc=refund.reason or None, notify_url=self.config.refund_notify_url or None)
        except WeChatRefused as exc:
            # a definite no: the amount is free again; any other failure leaves it PENDING for a retry
            await self.store.refund_transition(refund.out_refund_no, domain.sources(REFUND_KIND, FAILED), FAILED,
                                               "refund", error=str(exc.wechat_code))
            raise ServiceError(502, "UPSTREAM_ERROR", "WeChat refused the refund: %s" % exc,
                               exc.wechat_code) from None
        log.info("refund %s of %d fen for order %s accepted", refund.out_refund_no, refund.refund_fee, order.out_trade_no)
        return (await self.store.refund_transition(refund.out_refund_no, (PENDING,), PROCESSING, "refund",
                                                   refund_id=answer.get("refund_id")))[1]

    async def admin_order(self, out_trade_no, refresh=False):
        """(order, refunds), refunds reconciled with refundquery when asked or stale."""
        order = await self._any_order(out_trade_no)
        refunds = await self.store.refunds_of(order.out_trade_no)
        stale = [r for r in refunds if r.status in REFUND_OPEN and (refresh or self._stale(r))]
        for refund in stale:
            await self.reconcile_refund(refund)
        if stale:
            order, refunds = await self.store.get_order(out_trade_no), await self.store.refunds_of(out_trade_no)
        return order, refunds

    async def reconcile_refund(self, refund):
        """Bring a refund in line with refundquery (for a lost refund notification)."""
        known = {r["out_refund_no"]: r for r in await self.wechat.refund_query(refund.out_refund_no)}
        found = known.get(refund.out_refund_no)
        if found is None and refund.status == PENDING and self._resendable(refund):
            return await self._resend_refund(refund)
        if found is None:
            await self.store.mark_refund_checked(refund.out_refund_no, self.clock())
            return refund
        if found["refund_fee"] != refund.refund_fee:
            raise UpstreamError("refundquery: refund_fee of %s does not match" % refund.out_refund_no)
        status = found["refund_status"]
        if status in REFUND_OUTCOMES or (status == PROCESSING and refund.status == PENDING):
            # a PENDING refund WeChat knows was accepted after all (its answer was lost)
            return (await self.store.refund_transition(
                refund.out_refund_no, domain.sources(REFUND_KIND, status), status, "refundquery",
                refund_id=found.get("refund_id"), success_time=found.get("success_time")))[1]
        await self.store.mark_refund_checked(refund.out_refund_no, self.clock())
        return refund

    def _resendable(self, refund):
        """A PENDING refund unknown to WeChat is sent again once its own call must be over (every
        attempt timed out), and only while it is young enough that nobody has handled it by
        hand: an operator may have refunded an old one in the merchant console instead."""
        age = self.clock() - refund.created_at
        in_flight = getattr(self.wechat, "attempts", 3) * self.config.timeout + RESEND_MARGIN
        if age > SWEEP_MAX_AGE:
            log.warning("refund %s: PENDING for %d s and unknown to WeChat; too old to send again "
                        "by itself: repeat POST .../refunds with its out_refund_no, or see to it by hand",
                        refund.out_refund_no, age)
        return in_flight < age <= SWEEP_MAX_AGE

    async def _resend_refund(self, refund):
        """A PENDING refund WeChat has never seen (the call was lost, or the process died
        before making it): send it again with the same out_refund_no, which WeChat refunds
        once however often it is sent. Returns the refund as stored afterwards."""
        log.warning("refund %s: WeChat has no record of it; sending it again", refund.out_refund_no)
        await self.store.mark_refund_checked(refund.out_refund_no, self.clock())
        order = await self.store.get_order(refund.out_trade_no)
        try:
            return await self._submit_refund(order, refund)
        except ServiceError as exc:  # WeChat said no: the refund is FAILED, its amount free again
            log.warning("refund %s: sent again and refused: %s", refund.out_refund_no, exc.message)
            return await self.store.get_refund(refund.out_refund_no)

    async def open_refunds(self, statuses, limit, before=None):
        """Refunds by status for the admin API (by default the open ones): ([refund], next
        cursor or None)."""
        statuses = statuses or list(REFUND_OPEN)
        if not set(statuses) <= set(domain.REFUND_STATES):
            raise ServiceError(400, "INVALID_STATUS", "status must be among %s" % ", ".join(domain.REFUND_STATES))
        refunds = await self.store.list_refunds(statuses, limit + 1, read_cursor(before, _OUT_REFUND_NO))
        return _page(refunds, limit, "out_refund_no")

    async def handle_refund_notify(self, body):
        """Decrypt and apply a refund notification. Returns the XML reply for WeChat."""
        try:
            params = wxpay.from_xml(body)
            problem = self._refund_envelope_problem(params)
            info = None if problem else wxpay.decrypt_req_info(params["req_info"], self.config.api_key)
        except wxpay.XMLError as exc:
            problem = str(exc)
        if not problem:
            problem = await self._record_refund(info)
        if problem:
            log.warning("refund notify refused: %s", problem)
            return wxpay.fail_reply(problem)
        return wxpay.SUCCESS_REPLY

    async def _record_refund(self, info):
        """Check a decrypted refund notification against the stored refund and order, then
        the one transition to its outcome; a problem or None."""
        refund = await self.store.get_refund(info.get("out_refund_no") or "")
        problem = await self._refund_problem(info, refund)
        if problem:
            return problem
        changed, refund = await self.store.refund_transition(
            refund.out_refund_no, domain.sources(REFUND_KIND, info["refund_status"]), info["refund_status"], "notify",
            refund_id=info.get("refund_id"), success_time=info.get("success_time"))
        if not changed and refund.status != info["refund_status"]:
            log.error("refund %s is %s; a notification says %s: not applied",
                      refund.out_refund_no, refund.status, info["refund_status"])
            return "refund already settled differently"
        if changed:
            log.info("refund %s: %s (notify)", refund.out_refund_no, refund.status)
        return None

    def _refund_envelope_problem(self, params):
        if not self.config.api_key:
            return "v2 refund notifications are not accepted: no WECHAT_API_KEY to decrypt them with"
        if params.get("return_code") != "SUCCESS":
            return "return_code is not SUCCESS"
        if params.get("appid") != self.config.appid or params.get("mch_id") != self.config.mch_id:
            return "appid or mch_id does not match"
        if not params.get("req_info"):
            return "req_info missing"
        return None

    async def _refund_problem(self, info, refund):
        if refund is None:
            return "unknown refund"
        order = await self.store.get_order(refund.out_trade_no)
        if info.get("out_trade_no") != refund.out_trade_no:
            return "out_trade_no does not match the refund"
        if info.get("refund_fee") != str(refund.refund_fee) or info.get("total_fee") != str(order.total_fee):
            return "amounts do not match the refund"
        if info.get("refund_status") not in REFUND_OUTCOMES:
            return "unexpected refund_status"
        return None

    # -- v3 notifications ------------------------------------------------------------
    async def handle_notify_v3(self, headers, body):
        """A v3 payment or refund notification. Returns once it is applied and committed (or
        a repeat that changes nothing): the handler then answers 200. Raises
        NotificationRefused (401: signature, serial, timestamp, probe, replay; 400: content
        that does not match what is stored), with nothing stored."""
        try:
            event = await self.wechat.open_notification(headers, body)
        except NotificationRefused as exc:
            log.warning("v3 notify refused (%d): %s", exc.status, exc)
            raise
        if event.kind == "transaction":
            problem = await self._v3_payment(event.fields)
        elif event.kind == "refund":
            problem = await self._v3_refund(event)
        else:
            log.info("v3 notification %r (%s) acknowledged: nothing to do", event.id, event.event_type[:64])
            return
        if problem:
            log.warning("v3 notify %r refused: %s", str(event.id)[:64], problem)
            raise NotificationRefused(400, problem)

    async def _v3_payment(self, fields):
        no = fields.get("out_trade_no")
        order = await self.store.get_order(no) if _plausible_trade_no(no) else None
        if order is None:
            return "unknown order"
        if fields.get("appid") != self.config.appid or fields.get("mch_id") != self.config.mch_id:
            return "appid or mchid does not match"
        if fields.get("total_fee") != str(order.total_fee):
            # whatever trade_state it claims: a notification about this order with another amount
            # is not WeChat's word on it (a leaked key), even one we would record nothing for
            return "amount.total %r does not match the order's %d" % (fields.get("total_fee", "")[:16], order.total_fee)
        if fields.get("trade_state") != SUCCESS:
            log.info("order %s: a notification says %s; nothing to record", no, str(fields.get("trade_state"))[:16])
            return None
        return _paid_problem(fields, order) or await self._record_payment(order, fields)

    async def _v3_refund(self, event):
        fields = event.fields
        if fields.get("mch_id") != self.config.mch_id:
            return "mchid does not match"
        if _V3_REFUND_EVENTS.get(event.event_type) != fields.get("refund_status"):
            return "event_type %s does not match the refund's status" % event.event_type[:32]
        return await self._record_refund(fields)

    async def _any_order(self, out_trade_no):
        order = await self.store.get_order(out_trade_no) if _plausible_trade_no(out_trade_no) else None
        if order is None:
            raise ServiceError(404, "ORDER_NOT_FOUND", "no such order")
        return order

    async def sweep(self, limit=SWEEP_BATCH):
        """Ask WeChat about unpaid orders and open refunds whose notification has not come
        (protocol.md section 6). Returns how many were checked; failures are logged."""
        orders, refunds = await self.store.claim_due(self.clock(), RECONCILE_AFTER, SWEEP_MAX_AGE, limit)
        for record, reconcile in [(o, self.reconcile) for o in orders] + [(r, self.reconcile_refund) for r in refunds]:
            try:
                await reconcile(record)
            except (WeChatError, ServiceError) as exc:
                log.warning("sweep: %s: %s", getattr(record, "out_refund_no", record.out_trade_no), exc)
        if orders or refunds:
            log.info("sweep: checked %d unpaid orders and %d open refunds", len(orders), len(refunds))
        return len(orders) + len(refunds)

    async def refunds_to_show(self, order):
        """The refunds an order's view lists (a refunded order shows what was refunded)."""
        return await self.store.refunds_of(order.out_trade_no) if order.status == REFUND else None


def _page(records, limit, key):
    """(the first `limit` records, the cursor of the next page or None): records came newest
    first, one more than a page if there is more."""
    page = records[:limit]
    if len(records) <= limit:
        return page, None
    return page, "%r:%s" % (page[-1].created_at, getattr(page[-1], key))


def read_cursor(cursor, key_pattern):
    """(created_at, key) from a `next` cursor of a list; 400 INVALID_CURSOR if malformed."""
    if cursor is None:
        return None
    stamp, _, key = cursor.partition(":")
    created_at = float(stamp) if _STAMP.fullmatch(stamp) else None
    if created_at is None or not key_pattern.fullmatch(key):
        raise ServiceError(400, "INVALID_CURSOR", "before must be the `next` value of a previous page")
    return created_at, key


def _refund_failure(exc, out_refund_no, named=True):
    """The answer for a failure once a refund may be stored: a ServiceError whose error object
    names it (out_refund_no, unless not `named`), so that a retry sends that refund rather
    than a second one."""
    retry = "repeat the call with the same Idempotency-Key or out_refund_no"
    extra = {"out_refund_no": out_refund_no} if named else {}
    if isinstance(exc, ServiceError):
        return ServiceError(exc.status, exc.code, exc.message, exc.wechat_code, dict(exc.extra, **extra))
    if isinstance(exc, WeChatError):  # WeChat may or may not have it: it stays PENDING
        return ServiceError(exc.status, exc.code, "WeChat: %s; the refund is stored as PENDING: %s" % (exc, retry),
                            exc.wechat_code, extra)
    if isinstance(exc, StoreError):
        log.warning("refund %s: %s", out_refund_no, exc)
        return ServiceError(503, "STORE_UNAVAILABLE", "storage unavailable: %s" % retry, None, extra)
    log.error("refund %s: unexpected failure", out_refund_no, exc_info=exc)
    return ServiceError(500, "INTERNAL", "internal error: %s" % retry, None, extra)


def _whole(value, maximum, code, message):
    """A JSON integer from 1 to maximum; 400 `code` otherwise."""
    try:
        return numbers.check_whole(value, 1, maximum)
    except numbers.NumberRefused:
        raise ServiceError(400, code, message) from None


def _check_refund_input(refund_fee, reason, out_refund_no):
    # WeChat's refund_fee is a 32-bit integer, as total_fee: a larger one is no amount at all
    _whole(refund_fee, MAX_TOTAL_FEE, "INVALID_REFUND_FEE",
           "refund_fee must be a whole number of fen from 1 to %d" % MAX_TOTAL_FEE)
    if reason is not None and (not isinstance(reason, str) or len(reason) > REFUND_DESC_MAX
                               or not reason.isprintable()):
        raise ServiceError(400, "INVALID_REASON", "reason must be a string of at most %d printable characters"
                           % REFUND_DESC_MAX)
    if out_refund_no is not None and not (isinstance(out_refund_no, str) and _OUT_REFUND_NO.fullmatch(out_refund_no)):
        raise ServiceError(400, "INVALID_OUT_REFUND_NO", "out_refund_no must be 1 to 64 of [0-9A-Za-z_-|*@]")


def new_out_trade_no(now):
    """32 chars: Beijing time to the second + 18 random alphanumerics (~107 bits)."""
    stamp = datetime.datetime.fromtimestamp(now, _BEIJING).strftime("%Y%m%d%H%M%S")
    return stamp + base62(secrets.randbits(107), 18)


def base62(number, width):
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_OUT_TRADE_NO_ALPHABET[digit])
    return "".join(digits)


def cut_utf8(text, max_bytes):
    """text shortened to at most max_bytes of UTF-8, never splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _paid_problem(params, order):
    if params.get("total_fee") != str(order.total_fee):
        return "total_fee %r does not match the order's %d" % (params.get("total_fee", "")[:16], order.total_fee)
    if not params.get("transaction_id"):
        return "transaction_id missing"
    return None


def _require_unpaid(order):
    if order.status in PAID:
        raise ServiceError(409, "ORDER_PAID", "the order is already paid (%s)" % order.status)
    if order.status not in PAYABLE:
        raise ServiceError(409, "ORDER_%s" % order.status, "the order is %s" % order.status)


def _plausible_trade_no(value):
    # printable ASCII only: U+0000 would reach PostgreSQL (which cannot hold it) as a 503
    return isinstance(value, str) and 0 < len(value) <= 32 and value.isascii() and value.isprintable()


def _check_idempotency_key(key):
    if key is not None and not (0 < len(key) <= 64 and key.isascii() and key.isprintable()):
        raise ServiceError(400, "INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be 1 to 64 printable ASCII characters")


def _token_hash(token):
    # only a hash is stored, so a leaked database holds no usable session tokens
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
