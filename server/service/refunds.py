"""Refunds (the admin API): stored before WeChat is asked, sent again safely, reconciled with refundquery."""
import logging
import re

from server import domain, metrics
from server.domain import (FAILED, PENDING, PROCESSING, REFUND, REFUND_RECORD, REFUND_OPEN, REFUND_OUTCOMES, Refund)
from server.service.common import MAX_TOTAL_FEE, Part, ServiceError, check_idempotency_key, page, read_cursor, whole
from server.service.orders import new_out_trade_no
from server.service.sweep import SWEEP_MAX_AGE
from server.store import RefundRefused, StoreError
from server.wechat import UpstreamError, WeChatError, WeChatRefused

log = logging.getLogger("server.service")

RESEND_MARGIN = 5           # seconds past the longest a refund call can take (every attempt timing out)
MAX_REFUNDS = 50            # WeChat's limit of partial refunds per order
REFUND_DESC_MAX = 80
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_REFUND_REFUSALS = {
    "not_paid": (409, "ORDER_NOT_PAID", "only a paid order can be refunded"),
    "amount": (409, "REFUND_EXCEEDS_PAID", "the refunds would exceed what was paid"),
    "count": (409, "TOO_MANY_REFUNDS", "an order takes at most %d refunds" % MAX_REFUNDS),
    "conflict": (409, "REFUND_NO_CONFLICT", "this out_refund_no was used for another refund"),
}


class Refunds(Part):
    async def refund(self, out_trade_no, refund_fee, reason=None, out_refund_no=None, idempotency_key=None):
        """Store a refund (PENDING), then ask WeChat. Safe to retry with the same Idempotency-Key
        or out_refund_no: a refund still PENDING is sent again, and WeChat refunds one
        out_refund_no once. Every answer once it is stored names it, errors included."""
        _check_refund_input(refund_fee, reason, out_refund_no)
        check_idempotency_key(idempotency_key)
        order = await self.service.orders.any_order(out_trade_no)
        wanted = self._new_refund(order, refund_fee, reason, out_refund_no, idempotency_key)
        try:
            refund = await self._store_refund(order, wanted, out_refund_no is not None)
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

    async def _store_refund(self, order, wanted, named):
        """The refund as stored: `wanted`, or the one its Idempotency-Key or out_refund_no
        already names. 409 when the store refuses it or the key was used for another refund
        (another order or amount, or another out_refund_no when the caller `named` one)."""
        try:
            refund, created = await self.store.insert_refund(wanted, MAX_REFUNDS)
        except RefundRefused as exc:
            status, code, message = _REFUND_REFUSALS[exc.reason]
            if exc.reason == "amount":
                left = domain.refundable_fee(order, await self.store.refunds_of(order.out_trade_no))
                message = "%s: %d fen is left to refund" % (message, left)
            raise ServiceError(status, code, message) from None
        if not created and ((refund.out_trade_no, refund.refund_fee) != (wanted.out_trade_no, wanted.refund_fee)
                            or (named and refund.out_refund_no != wanted.out_refund_no)):
            raise ServiceError(409, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a refund of "
                               "another order, amount or out_refund_no")
        return refund

    async def _submit_refund(self, order, refund):
        try:
            answer = await self.wechat.refund(
                out_trade_no=order.out_trade_no, out_refund_no=refund.out_refund_no,
                total_fee=order.total_fee, refund_fee=refund.refund_fee,
                refund_desc=refund.reason or None, notify_url=self.config.refund_notify_url or None)
        except WeChatRefused as exc:
            # a definite no: the amount is free again; any other failure leaves it PENDING for a retry
            changed, _ = await self.store.refund_transition(refund.out_refund_no, domain.sources(REFUND_RECORD, FAILED),
                                                            FAILED, "refund", error=str(exc.wechat_code))
            if changed:
                metrics.refund_moved(FAILED)
            raise ServiceError(502, "UPSTREAM_ERROR", "WeChat refused the refund: %s" % exc,
                               exc.wechat_code) from None
        log.info("refund %s of %d fen for order %s accepted", refund.out_refund_no, refund.refund_fee, order.out_trade_no)
        return await self._moved(refund.out_refund_no, (PENDING,), PROCESSING, "refund",
                                 refund_id=answer.get("refund_id"))

    async def admin_order(self, out_trade_no, refresh=False):
        """(order, refunds), refunds reconciled with refundquery when asked or stale."""
        order = await self.service.orders.any_order(out_trade_no)
        refunds = await self.store.refunds_of(order.out_trade_no)
        stale = [r for r in refunds if r.status in REFUND_OPEN and (refresh or self.stale(r))]
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
            return await self._moved(refund.out_refund_no, domain.sources(REFUND_RECORD, status), status,
                                     "refundquery", refund_id=found.get("refund_id"),
                                     success_time=found.get("success_time"))
        await self.store.mark_refund_checked(refund.out_refund_no, self.clock())
        return refund

    async def _moved(self, out_refund_no, from_statuses, to_status, source, **fields):
        """The refund after its move (counted when this call made it)."""
        changed, refund = await self.store.refund_transition(out_refund_no, from_statuses, to_status, source, **fields)
        if changed:
            metrics.refund_moved(to_status)
        return refund

    def _resendable(self, refund):
        """A PENDING refund unknown to WeChat is sent again once its own call must be over (every
        attempt timed out), and only while it is young enough that nobody has handled it by
        hand: an operator may have refunded an old one in the merchant console instead."""
        age = self.clock() - refund.created_at
        in_flight = self.wechat.attempts * self.config.timeout + RESEND_MARGIN
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
        return page(refunds, limit, "out_refund_no")

    async def refunds_to_show(self, order):
        """The refunds an order's view lists (a refunded order shows what was refunded)."""
        return await self.store.refunds_of(order.out_trade_no) if order.status == REFUND else None


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


def _check_refund_input(refund_fee, reason, out_refund_no):
    # WeChat's refund_fee is a 32-bit integer, as total_fee: a larger one is no amount at all
    whole(refund_fee, MAX_TOTAL_FEE, "INVALID_REFUND_FEE",
           "refund_fee must be a whole number of fen from 1 to %d" % MAX_TOTAL_FEE)
    if reason is not None and (not isinstance(reason, str) or len(reason) > REFUND_DESC_MAX
                               or not reason.isprintable()):
        raise ServiceError(400, "INVALID_REASON", "reason must be a string of at most %d printable characters"
                           % REFUND_DESC_MAX)
    if out_refund_no is not None and not (isinstance(out_refund_no, str) and _OUT_REFUND_NO.fullmatch(out_refund_no)):
        raise ServiceError(400, "INVALID_OUT_REFUND_NO", "out_refund_no must be 1 to 64 of [0-9A-Za-z_-|*@]")


