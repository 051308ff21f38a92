"""What every part of the service shares: ServiceError, the Part base, cursors, limits and input checks."""
import re

from server import numbers

RECONCILE_AFTER = 60        # an unpaid order older than this is checked with orderquery
RECONCILE_EVERY = 10        # ... but not more often than this
MAX_TOTAL_FEE = 2 ** 31 - 1  # WeChat's total_fee is a 32-bit integer
_STAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


class ServiceError(Exception):
    """An answer for the API caller: HTTP status, error code, message, WeChat's code."""

    def __init__(self, status, code, message, wechat_code=None, extra=None):
        super().__init__(message)
        self.status, self.code, self.message, self.wechat_code = status, code, message, wechat_code
        self.extra = extra or {}  # more fields for the error object (e.g. out_refund_no)


class Part:
    """A part of the service: it reads the configuration, the Store, the PayClient and the
    clock from the Service it belongs to (so that the whole service sees one of each)."""

    def __init__(self, service):
        self.service = service

    config = property(lambda self: self.service.config)
    store = property(lambda self: self.service.store)
    wechat = property(lambda self: self.service.wechat)
    clock = property(lambda self: self.service.clock)

    def stale(self, record):
        """An order or refund old enough, and not checked recently, to ask WeChat about."""
        now = self.clock()
        return (now - record.created_at > RECONCILE_AFTER
                and now - (record.checked_at or 0) > RECONCILE_EVERY)

    async def order_named(self, out_trade_no):
        """The stored Order of a plausible out_trade_no, else None."""
        return await self.store.get_order(out_trade_no) if plausible_trade_no(out_trade_no) else None


def page(records, limit, key, stamp="created_at"):
    """(the first `limit` records, the cursor of the next page or None): records came newest
    first (by `stamp`, then `key`), one more than a page if there is more."""
    shown = records[:limit]
    if len(records) <= limit:
        return shown, None
    return shown, "%r:%s" % (getattr(shown[-1], stamp), getattr(shown[-1], key))


def read_cursor(cursor, key_pattern):
    """(created_at, key) from a `next` cursor of a list; 400 INVALID_CURSOR if malformed."""
    if cursor is None:
        return None
    stamp, _, key = cursor.partition(":")
    created_at = float(stamp) if _STAMP.fullmatch(stamp) else None
    if created_at is None or not key_pattern.fullmatch(key):
        raise ServiceError(400, "INVALID_CURSOR", "before must be the `next` value of a previous page")
    return created_at, key


def whole(value, maximum, code, message):
    """A JSON integer from 1 to maximum; 400 `code` otherwise."""
    try:
        return numbers.check_whole(value, 1, maximum)
    except numbers.NumberRefused:
        raise ServiceError(400, code, message) from None


def plausible_trade_no(value):
    # printable ASCII only: U+0000 would reach PostgreSQL (which cannot hold it) as a 503
    return isinstance(value, str) and 0 < len(value) <= 32 and value.isascii() and value.isprintable()


def check_idempotency_key(key):
    if key is not None and not (0 < len(key) <= 64 and key.isascii() and key.isprintable()):
        raise ServiceError(400, "INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be 1 to 64 printable ASCII characters")
