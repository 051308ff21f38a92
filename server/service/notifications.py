"""Notifications, one path for both API versions: the pay client opens and believes one, this applies it."""
import logging

from server import domain, metrics
from server.domain import PAY_V2, PAY_V3, REFUND_RECORD, REFUND_OUTCOMES, SUCCESS
from server.service.common import Part
from server.wechat import PAYMENT, REFUND_RESULT, NotificationRefused

log = logging.getLogger("server.service")
DUPLICATE = object()   # what _record returns for a repeat that changed nothing


class Notifications(Part):
    async def v2(self, kind, body):
        """A v2 notification (kind PAYMENT or REFUND_RESULT): the pay client's XML reply for WeChat."""
        try:
            await self.apply(self.wechat.open_v2_notification(kind, body, self.order_named), PAY_V2, kind)
        except NotificationRefused as exc:
            return self.wechat.v2_reply(str(exc))
        return self.wechat.v2_reply(None)

    async def v3(self, headers, body):
        """A v3 notification: returns once it is applied and committed (or a repeat that changes
        nothing); NotificationRefused (401: signature, serial, timestamp, probe, replay; 400:
        content that does not match what is stored), with nothing stored."""
        await self.apply(self.wechat.open_notification(headers, body), PAY_V3)

    async def apply(self, opening, version, kind=None):
        """Await the pay client's opening of a notification, then record what it says; the
        refusal of either (NotificationRefused) is logged here and raised. Each verdict is
        counted (server/metrics.py)."""
        try:
            note = await opening
            problem = await self._record(note)
        except NotificationRefused as exc:
            named = " %r" % exc.about[:64] if exc.about else ""
            log.warning("notification%s refused (%d): %s", named, exc.status, exc)
            metrics.notification(version, kind, "refused", str(exc))
            raise
        if problem is DUPLICATE:
            metrics.notification(version, note.kind, "duplicate")
        elif problem:
            log.warning("notification %r refused: %s", note.id[:64], problem)
            metrics.notification(version, note.kind, "refused", problem)
            raise NotificationRefused(400, problem)
        else:
            metrics.notification(version, note.kind, "accepted")

    async def _record(self, note):
        if note.kind == PAYMENT:
            return await self._payment(note)
        if note.kind == REFUND_RESULT:
            return await self._refund_result(note)
        log.info("notification %r (%s) acknowledged: nothing to do", note.id, note.event_type[:64])
        return None

    async def _payment(self, note):
        """Check a payment notification against its order, then the one transition to
        SUCCESS; a problem, None, or DUPLICATE."""
        order = note.order or await self.order_named(note.out_trade_no)
        if order is None:
            return "unknown order"
        if note.total_fee is not None and note.total_fee != order.total_fee:
            # whatever state it reports: a notification about this order with another amount
            # is not WeChat's word on it (a leaked key), even one we would record nothing for
            return "total_fee %s does not match the order's %d" % (note.total_fee, order.total_fee)
        if note.trade_state != SUCCESS:
            log.info("order %s: a notification says %s; nothing to record", order.out_trade_no, note.trade_state)
            return None
        if note.total_fee is None:
            return "total_fee missing or not a whole number"
        if not note.transaction_id:
            return "transaction_id missing"
        changed, order = await self.service.orders.apply_paid(order, note.transaction_id, note.time_end or "", "notify")
        if not changed and order.transaction_id != note.transaction_id:
            log.error("order %s: notification with a different transaction_id, not applied", order.out_trade_no)
            return "transaction_id does not match"
        if not changed:
            log.info("order %s: notification repeated, already %s", order.out_trade_no, order.status)
            return DUPLICATE
        return None

    async def _refund_result(self, note):
        """Check a refund notification against the stored refund and order, then the one
        transition to its outcome; a problem, None, or DUPLICATE."""
        refund = await self.store.get_refund(note.out_refund_no or "")
        problem = await self._refund_problem(note, refund)
        if problem:
            return problem
        status = note.refund_status
        changed, refund = await self.store.refund_transition(
            refund.out_refund_no, domain.sources(REFUND_RECORD, status), status, "notify",
            refund_id=note.refund_id, success_time=note.success_time)
        if not changed and refund.status != status:
            log.error("refund %s is %s; a notification says %s: not applied", refund.out_refund_no, refund.status, status)
            return "refund already settled differently"
        if not changed:
            return DUPLICATE
        log.info("refund %s: %s (notify)", refund.out_refund_no, refund.status)
        metrics.refund_moved(refund.status)
        return None

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
