"""Notifications, one path for both API versions: the pay client opens and believes one, this applies it."""
import dataclasses
import logging

from server import domain, logs, metrics
from server.domain import ACCEPTED, DUPLICATE, PAY_V2, PAY_V3, REFUND_OUTCOMES, REFUND_RECORD, REFUSED, SUCCESS
from server.service.common import Part
from server.service.notelog import KINDS, named, number, v3_kind
from server.wechat import PAYMENT, REFUND_RESULT, NotificationRefused

log = logging.getLogger("server.service")
LOGGED = "accepted, logged with its transition"   # _record's word when the store kept the log row


class Notifications(Part):
    async def v2(self, kind, body):
        """A v2 notification (kind PAYMENT or REFUND_RESULT): the pay client's XML reply for WeChat."""
        entry = self.service.notelog.received(PAY_V2, KINDS[kind], body)
        try:
            await self.apply(self.wechat.open_v2_notification(kind, body, self.order_named), entry)
        except NotificationRefused as exc:
            return self.wechat.v2_reply(str(exc))
        return self.wechat.v2_reply(None)

    async def v3(self, headers, body):
        """A v3 notification: returns once it is applied and committed (or a repeat that changes
        nothing); NotificationRefused (401: signature, serial, timestamp, probe, replay; 400:
        content that does not match what is stored), with nothing stored."""
        pairs = headers.get_all() if hasattr(headers, "get_all") else headers.items()
        entry = self.service.notelog.received(PAY_V3, v3_kind(body), body, pairs)
        await self.apply(self.wechat.open_notification(headers, body), entry)

    async def apply(self, opening, entry):
        """Await the pay client's opening of a notification, then record what it says, and keep
        `entry` in the notification log with the verdict: ACCEPTED or DUPLICATE returned; the
        refusal of either (NotificationRefused) is logged here and raised. Each verdict
        is counted too (server/metrics.py), but not a replay's (see _count)."""
        try:
            note = await opening
            logs.bind_order(note.out_trade_no)
            entry = named(entry, note)
            verdict = await self._record(note, dataclasses.replace(entry, verdict=ACCEPTED))
        except NotificationRefused as exc:
            about = " %r" % exc.about[:64] if exc.about else ""
            log.warning("notification%s refused (%d): %s", about, exc.status, exc)
            entry = _claimed(entry, exc)
            _count(entry, REFUSED, str(exc))
            await self.service.notelog.write(entry, REFUSED, str(exc))
            raise
        if verdict not in (ACCEPTED, DUPLICATE, LOGGED):
            log.warning("notification %r refused: %s", note.id[:64], verdict)
            _count(entry, REFUSED, verdict)
            await self.service.notelog.write(entry, REFUSED, verdict)
            raise NotificationRefused(400, verdict)
        outcome = DUPLICATE if verdict == DUPLICATE else ACCEPTED
        _count(entry, outcome)
        if verdict != LOGGED:
            await self.service.notelog.write(entry, verdict)
        return outcome

    async def _record(self, note, entry):
        """What a believed notification comes to: LOGGED (applied, `entry` kept with the
        transition), ACCEPTED (nothing to apply), DUPLICATE, or a problem (refused)."""
        if note.kind == PAYMENT:
            return await self._payment(note, entry)
        if note.kind == REFUND_RESULT:
            return await self._refund_result(note, entry)
        log.info("notification %r (%s) acknowledged: nothing to do", note.id, note.event_type[:64])
        return ACCEPTED

    async def _payment(self, note, entry):
        """Check a payment notification against its order, then the one transition to
        SUCCESS; what it comes to (see _record)."""
        order = note.order or await self.order_named(note.out_trade_no)
        if order is None:
            return "unknown order"
        if note.total_fee is not None and note.total_fee != order.total_fee:
            # whatever state it reports: a notification about this order with another amount
            # is not WeChat's word on it (a leaked key), even one we would record nothing for
            return "total_fee %s does not match the order's %d" % (note.total_fee, order.total_fee)
        if note.trade_state != SUCCESS:
            log.info("order %s: a notification says %s; nothing to record", order.out_trade_no, note.trade_state)
            return ACCEPTED
        if note.total_fee is None:
            return "total_fee missing or not a whole number"
        if not note.transaction_id:
            return "transaction_id missing"
        changed, order = await self.service.orders.apply_paid(order, note.transaction_id, note.time_end or "", "notify",
                                                              entry)
        if not changed and order.transaction_id != note.transaction_id:
            log.error("order %s: notification with a different transaction_id, not applied", order.out_trade_no)
            return "transaction_id does not match"
        if not changed:
            log.info("order %s: notification repeated, already %s", order.out_trade_no, order.status)
        return LOGGED if changed else DUPLICATE

    async def _refund_result(self, note, entry):
        """Check a refund notification against the stored refund and order, then the one
        transition to its outcome; what it comes to (see _record)."""
        refund = await self.store.get_refund(note.out_refund_no or "")
        problem = await self._refund_problem(note, refund)
        if problem:
            return problem
        status = note.refund_status
        changed, refund = await self.store.refund_transition(
            refund.out_refund_no, domain.sources(REFUND_RECORD, status), status, "notify", entry,
            refund_id=note.refund_id, success_time=note.success_time)
        if not changed and refund.status != status:
            log.error("refund %s is %s; a notification says %s: not applied", refund.out_refund_no, refund.status, status)
            return "refund already settled differently"
        if changed:
            log.info("refund %s: %s (notify)", refund.out_refund_no, refund.status)
            metrics.refund_moved(refund.status)
        return LOGGED if changed else DUPLICATE

    async def _refund_problem(self, note, refund):
        if refund is None:
            return "unknown refund"
        order = await self.store.get_order(refund.out_trade_no)
        if note.out_trade_no != refund.out_trade_no:
            return "out_trade_no does not match the refund"
        if note.refund_fee != refund.refund_fee or note.total_fee != order.total_fee:
            return "amounts do not match the refund"
        if note.refund_status not in REFUND_OUTCOMES:
            return "unexpected refund_status"
        return None


def _count(entry, verdict, reason=""):
    """Count a notification WeChat (or a forger) sent; an admin's replay of a stored one is not
    a new one received (a replayed refusal would trip the alert on refusals). What a replay
    applies is still counted where it lands: wxpay_payments_recorded_total, wxpay_refunds_total."""
    if entry.replay_of is None:
        metrics.notification(entry.version, entry.kind, verdict, reason)


def _claimed(entry, exc):
    """A refused v2 payment's entry names the order it claims (unverified), so that the log of
    that order shows it."""
    if entry.version == PAY_V2 and entry.kind == KINDS[PAYMENT] and entry.out_trade_no is None:
        return dataclasses.replace(entry, out_trade_no=number(exc.about))
    return entry
