"""Reconciliation: a Beijing day's bill against the store, repaired with notify's own moves, the rest reported."""
import datetime
import logging
import os
import re
import secrets
import socket

from server import domain, metrics, views
from server.domain import BEIJING, ORDER, PAID, PENDING, PROCESSING, REFUND_OPEN, REFUND_OUTCOMES, REFUND_RECORD, SUCCESS
from server.service.common import Part, ServiceError
from server.config import V2
from server.wechat import WeChatError, WeChatRefused
from server.wechat.bill import BillNotReady

log = logging.getLogger("server.service")

SOURCE = "reconciliation"     # the audit trail's name for a move made here
CLAIM_LEASE = 900             # seconds a daily run holds its day before another process may take it over
NO_BILL_GRACE = 12 * 3600     # WeChat makes bills by 10:00: "no bill" past noon the next day is a day without trades
_DATE = re.compile(r"(19[7-9][0-9]|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}")   # WeChat Pay has no bills before 1970


def parse_day(text):
    """A yyyy-MM-dd calendar date; 400 INVALID_DATE otherwise."""
    try:
        if isinstance(text, str) and _DATE.fullmatch(text):
            return datetime.date.fromisoformat(text)
    except ValueError:
        pass
    raise ServiceError(400, "INVALID_DATE", "date must be a calendar day yyyy-MM-dd (Beijing), 1970 or later")


def day_start(day):
    """The Unix time at which a Beijing calendar day begins."""
    return datetime.datetime.combine(day, datetime.time(), BEIJING).timestamp()


class Reconciliation(Part):
    def __init__(self, service):
        super().__init__(service)
        self.owner = "%s:%d:%s" % (socket.gethostname()[:64], os.getpid(), secrets.token_hex(4))   # in claims
        self._done = None   # the last day this service saw done: no claim to ask for until the next

    async def run(self, day, progress=None):
        """Reconcile one day: download its bill, compare every row with the store, repair, store
        and return the report. `progress(line)` hears each step. BillNotReady when WeChat has no
        bill of the day yet; other WeChatErrors as they come."""
        say = progress or (lambda line: None)
        say("downloading the bill of %s" % day.isoformat())
        rows = await self._bill(day)
        say("comparing %d bill rows with the store" % len(rows))
        found = Findings()
        for row in rows:
            await (self._payment(row, found) if row.kind == "payment" else self._refund(row, found))
        await self._missing(day, rows, found)
        report = found.report(day, len(rows), views.beijing_time(self.clock()))
        await self.store.save_reconciliation(day.isoformat(), report, report["unresolved"], self.clock())
        say("stored: %d matched, %d repaired, %d unresolved" % (report["matched"], len(report["repaired"]),
                                                               report["unresolved"]))
        return report

    async def stored(self, day):
        """The day's stored report; 404 REPORT_NOT_FOUND."""
        report = await self.store.get_reconciliation(day.isoformat())
        if report is None:
            raise ServiceError(404, "REPORT_NOT_FOUND", "no reconciliation of %s is stored" % day.isoformat())
        return report

    async def _bill(self, day):
        try:
            return await self.wechat.download_bill(day)
        except BillNotReady as exc:
            if exc.empty_day and self.clock() >= day_start(day) + 86400 + NO_BILL_GRACE:
                log.info("reconciliation %s: WeChat has no bill (%s): a day without trades", day, exc.wechat_code)
                return []
            raise

    async def _payment(self, row, found):
        """A payment row: matched, repaired (an unpaid or closed order WeChat has paid, of the same
        amount: notify's move), or a mismatch."""
        order = await self.order_named(row.out_trade_no) if self._ours(row) else None
        bill = {"total_fee": row.total_fee, "transaction_id": row.transaction_id}
        if order is None:
            return found.mismatch("unknown_payment", self._named(row, bill), None, out_trade_no=row.out_trade_no)
        ours = {"total_fee": order.total_fee, "status": order.status, "transaction_id": order.transaction_id}
        if order.total_fee != row.total_fee:
            return found.mismatch("amount_differs", bill, ours, out_trade_no=row.out_trade_no)
        if order.status in domain.sources(ORDER, SUCCESS) and await self._confirmed(row):
            changed, order = await self.service.orders.apply_paid(order, row.transaction_id, _time_end(row), SOURCE)
            if changed:
                return found.repair(out_trade_no=row.out_trade_no, was=ours["status"], now=order.status)
        if order.status not in PAID:
            return found.mismatch("status_differs", bill, ours, out_trade_no=row.out_trade_no)
        if order.transaction_id and order.transaction_id != row.transaction_id:
            return found.mismatch("transaction_differs", bill, ours, out_trade_no=row.out_trade_no)
        found.matched += 1

    async def _refund(self, row, found):
        """A refund row: matched, repaired (an open refund WeChat reports further on: refundquery's
        move), or a mismatch."""
        ours = _plausible(row.out_refund_no) and self._ours(row)
        refund = await self.store.get_refund(row.out_refund_no) if ours else None
        numbers = dict(out_refund_no=row.out_refund_no, out_trade_no=row.out_trade_no)
        bill = {"refund_fee": row.refund_fee, "refund_status": row.refund_status, "refund_id": row.refund_id}
        if refund is None or refund.out_trade_no != row.out_trade_no:
            return found.mismatch("unknown_refund", self._named(row, bill), None, **numbers)
        ours = {"refund_fee": refund.refund_fee, "status": refund.status, "refund_id": refund.refund_id}
        if refund.refund_fee != row.refund_fee:
            return found.mismatch("refund_amount_differs", bill, ours, **numbers)
        if refund.refund_id and refund.refund_id != row.refund_id:
            # WeChat numbers a refund once: our out_refund_no under another refund_id is not our refund
            return found.mismatch("refund_id_differs", bill, ours, **numbers)
        if refund.status == row.refund_status or _settled_since(row.refund_status, refund.status):
            found.matched += 1
            return None
        if _may_move(refund.status, row.refund_status) and await self._confirmed(row):
            changed, refund = await self.store.refund_transition(
                refund.out_refund_no, domain.sources(REFUND_RECORD, row.refund_status), row.refund_status, SOURCE,
                refund_id=row.refund_id or refund.refund_id)
            if changed:
                metrics.refund_moved(refund.status)
                return found.repair(out_refund_no=refund.out_refund_no, was=ours["status"], now=refund.status)
            if refund.status == row.refund_status:
                found.matched += 1
                return None
        found.mismatch("status_differs", bill, dict(ours, status=refund.status), **numbers)

    def _ours(self, row):
        """Whether a row is of this shop's appid and mch_id (another app on the same merchant
        number has its own orders, and notify refuses another's as well)."""
        return (row.appid, row.mch_id) == (self.config.appid, self.config.mch_id)

    def _named(self, row, bill):
        # a row of another appid or mch_id says whose it is
        return bill if self._ours(row) else dict(bill, appid=row.appid, mch_id=row.mch_id)

    async def _confirmed(self, row):
        """Whether WeChat's signed word agrees with a row that would move money state. v3's bill
        is vouched for by the SHA1 in tradebill's signed answer; v2's is an unsigned file only
        TLS vouches for, so its row waits for orderquery's or refundquery's signed answer."""
        if self.config.pay_version != V2:
            return True
        try:
            if row.kind == "payment":
                answer = await self.wechat.order_query(row.out_trade_no)
                return (answer.get("trade_state") in PAID and answer.get("total_fee") == row.total_fee
                        and answer.get("transaction_id") == row.transaction_id)
            known = [r for r in await self.wechat.refund_query(row.out_refund_no)
                     if r.get("out_refund_no") == row.out_refund_no]
        except WeChatRefused:
            return False   # ORDERNOTEXIST, REFUNDNOTEXIST: WeChat does not confirm it
        return any((r.get("refund_status"), r.get("refund_fee"), r.get("refund_id")) ==
                   (row.refund_status, row.refund_fee, row.refund_id) for r in known)

    async def _missing(self, day, rows, found):
        """Orders we have as paid that day (time_end, Beijing) that the bill does not list."""
        listed = {row.out_trade_no for row in rows if row.kind == "payment"}
        stamp = day.strftime("%Y%m%d")
        for order in await self.store.paid_orders_between(stamp + "000000", stamp + "235959"):
            if order.out_trade_no not in listed:
                found.mismatch("missing_from_bill", None, {"total_fee": order.total_fee, "status": order.status,
                                                           "transaction_id": order.transaction_id},
                               out_trade_no=order.out_trade_no)

    # -- the daily run -----------------------------------------------------------
    async def daily(self):
        """Reconcile the day due (yesterday, once RECONCILE_AT has passed in Beijing) if this process
        can claim it: True when it ran and finished. Not ready or failing: the day is released
        to be tried again in RECONCILE_RETRY seconds, by whichever process claims it first."""
        now = self.clock()
        day = due_day(now, self.config.reconcile_at)
        if day == self._done or not await self.store.claim_reconciliation(day.isoformat(), self.owner, now,
                                                                          CLAIM_LEASE):
            return False
        try:
            report = await self.run(day)
        except (WeChatError, ServiceError) as exc:
            retry_at = self.clock() + self.config.reconcile_retry
            log.warning("daily reconciliation of %s: %s; trying again in %d s", day, exc, self.config.reconcile_retry)
            await self.store.finish_reconciliation(day.isoformat(), self.owner, self.clock(), retry_at)
            return False
        await self.store.finish_reconciliation(day.isoformat(), self.owner, self.clock())
        self._done = day
        log.info("daily reconciliation of %s: %d rows, %d matched, %d repaired, %d unresolved", day,
                 report["bill_rows"], report["matched"], len(report["repaired"]), report["unresolved"])
        return True


def due_day(now, at):
    """The day the daily run reconciles at `now`: yesterday once `at` (HH:MM, Beijing) has passed
    today, else the day before (a run missed yesterday is made up)."""
    local = datetime.datetime.fromtimestamp(now, BEIJING)
    hour, minute = map(int, at.split(":"))
    passed = (local.hour, local.minute) >= (hour, minute)
    return local.date() - datetime.timedelta(days=1 if passed else 2)


def _plausible(number):
    # a bill's number reaches the store only if it could be one of ours (PostgreSQL refuses U+0000)
    return 0 < len(number) <= 64 and number.isascii() and number.isprintable()


def _may_move(ours, theirs):
    """Whether refundquery would move our refund to the state the bill reports: an open one to
    SUCCESS, a PENDING one (its answer lost) to PROCESSING."""
    return (theirs == SUCCESS and ours in REFUND_OPEN) or (theirs == PROCESSING and ours == PENDING)


def _settled_since(theirs, ours):
    """Whether ours is the outcome of the refund the bill shows open: a bill has a refund as it
    was at the end of the day it was asked for, and one settled after midnight is PROCESSING
    there while a notification or refundquery has told us its outcome since."""
    return theirs == PROCESSING and ours in REFUND_OUTCOMES


def _time_end(row):
    """The bill's 交易时间 (yyyy-MM-dd HH:mm:ss) as an order's time_end (yyyyMMddHHmmss)."""
    return re.sub(r"[^0-9]", "", row.trade_time)[:14]


class Findings:
    """What one run found: matched count, repairs, mismatches; report() in a stable order."""

    def __init__(self):
        self.matched, self.repaired, self.mismatches = 0, [], []

    def repair(self, **entry):
        self.repaired.append(entry)

    def mismatch(self, kind, bill, ours, **numbers):
        self.mismatches.append(dict(kind=kind, **numbers, bill=bill, ours=ours))

    def report(self, day, rows, created_at):
        def key(entry):
            return (entry.get("kind", ""), "out_refund_no" in entry, entry.get("out_trade_no") or "",
                    entry.get("out_refund_no") or "")
        return {"date": day.isoformat(), "bill_rows": rows, "matched": self.matched,
                "repaired": sorted(self.repaired, key=key), "mismatches": sorted(self.mismatches, key=key),
                "unresolved": len(self.mismatches), "created_at": created_at}
