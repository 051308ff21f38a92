"""The notification log: every notification received, its verdict and the bytes WeChat sent; listing, replay, pruning."""
import dataclasses
import logging
import re

from server.domain import PAY_V3, REFUSED, VERDICTS, LoggedNotification
from server.service.common import Part, ServiceError, page, plausible_trade_no, read_cursor
from server.store import StoreError
from server.wechat import PAYMENT, REFUND_RESULT, NotificationRefused, claimed_kind

log = logging.getLogger("server.service")

KINDS = {PAYMENT: "payment", REFUND_RESULT: "refund", None: "other"}   # a Notification's kind -> the log's
_V2_KINDS = {"payment": PAYMENT, "refund": REFUND_RESULT}
_ID = re.compile(r"[1-9][0-9]{0,17}")   # a positive id that fits PostgreSQL's bigint
_DAY = 86400


class _Pairs(list):
    """Stored (name, value) header pairs, read by the pay client as it reads a request's headers."""

    def get_all(self):
        return iter(self)


class NoteLog(Part):
    def received(self, version, kind, body, headers=(), replay_of=None):
        """The log entry of a notification just received (its verdict still to come)."""
        pairs = tuple((name, value) for name, value in headers if name.lower().startswith("wechatpay-"))
        bound = self.config.notification_log_body_bytes
        return LoggedNotification(received_at=self.clock(), version=version, kind=kind, verdict=REFUSED,
                                  body=bytes(body[:bound]), body_size=len(body), headers=pairs,
                                  replay_of=replay_of)

    async def write(self, entry, verdict, reason=None):
        """Store an entry on its own (a refusal, a duplicate, one with nothing to record). Its
        failure is a log line: the answer to WeChat is the same whether or not it was kept."""
        entry = dataclasses.replace(entry, verdict=verdict, reason=_printable(reason))
        try:
            await self.store.log_notification(entry)
        except (StoreError, OSError) as exc:
            log.warning("notification log: a %s notification (%s) not stored: %s", entry.version, verdict, exc)

    async def notifications(self, limit, before=None, out_trade_no=None, verdict=None):
        """The log for the admin API, newest first: ([entry], next cursor or None)."""
        if verdict is not None and verdict not in VERDICTS:
            raise ServiceError(400, "INVALID_VERDICT", "verdict must be one of %s" % ", ".join(VERDICTS))
        if out_trade_no is not None and not plausible_trade_no(out_trade_no):
            raise ServiceError(400, "INVALID_OUT_TRADE_NO", "out_trade_no must be 1 to 32 printable ASCII characters")
        cursor = read_cursor(before, _ID)
        entries = await self.store.list_notifications(limit + 1, cursor and (cursor[0], int(cursor[1])),
                                                      out_trade_no, verdict)
        return page(entries, limit, "id", stamp="received_at")

    async def replay(self, id):
        """Run a stored notification through verification and processing again: (its entry, the
        new verdict, the reason of a refusal). The new run is logged too (replay_of: id)."""
        stored = await self.store.get_notification(int(id)) if _ID.fullmatch(id or "") else None
        if stored is None:
            raise ServiceError(404, "NOTIFICATION_NOT_FOUND", "no notification %s in the log" % (id or "")[:24])
        if stored.body_size > len(stored.body):
            raise ServiceError(409, "NOTIFICATION_CUT", "its body was cut at NOTIFICATION_LOG_BODY_BYTES: it "
                                                        "cannot be verified again")
        notifications = self.service.notifications
        entry = self.received(stored.version, stored.kind, stored.body, stored.headers, stored.id)
        try:
            verdict = await notifications.apply(self._opening(stored), entry)
        except NotificationRefused as exc:
            return stored, REFUSED, str(exc)
        return stored, verdict, None

    def _opening(self, stored):
        """The pay client's opening of a stored notification. A v3 one skips the timestamp
        window and the nonce cache (they stop a notification captured on the wire being sent
        again; this is the stored copy, sent again by an admin) and nothing else: its
        signature is verified as when it came."""
        if stored.version == PAY_V3:
            return self.wechat.open_notification(_Pairs(stored.headers), stored.body, replay=True)
        return self.wechat.open_v2_notification(_V2_KINDS.get(stored.kind), stored.body,
                                                self.service.notifications.order_named)

    async def prune(self):
        """Delete what is older than NOTIFICATION_LOG_DAYS (the sweep calls this): how many."""
        return await self.store.prune_notifications(self.clock() - self.config.notification_log_days * _DAY)


def v3_kind(body):
    """A v3 notification's kind as its (unencrypted) event_type says, before it is believed."""
    return KINDS[claimed_kind(body)]


def named(entry, note):
    """The entry with what an opened notification names: its kind, order, refund."""
    return dataclasses.replace(entry, kind=KINDS.get(note.kind, KINDS[None]),
                               out_trade_no=number(note.out_trade_no), out_refund_no=number(note.out_refund_no))


def number(value):
    """An out_trade_no or out_refund_no fit to keep (an unverified one may be anything), else None."""
    return value if isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable() else None


def _printable(text):
    """Text fit for every engine (no U+0000, which PostgreSQL cannot hold), at most 256 characters."""
    return None if text is None else "".join(c if c.isprintable() else "?" for c in str(text)[:256])
