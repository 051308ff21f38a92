"""The Store contract: what the service may rely on, whatever the engine.

Every method is a coroutine. "Atomic" means: one transaction, durable (committed, on disk
as the engine promises) before the coroutine returns, and either wholly applied or not at
all. "A concurrent caller" is any other coroutine, process or host using the same database.
Moves between states are those of server/domain.py (MOVES); a move the table does not allow
raises domain.MoveRefused and writes nothing. Times are the store's injected clock.

Engines: sqlite/ (SQLiteStore, the embedded default, one process) and postgres/ (PostgresStore,
several processes and hosts on one database), each an engine, a schema and the store's methods;
tables.py is what both store. open_store(url) picks one by URL.
"""
import asyncio
import logging
import time
from typing import Protocol
from urllib.parse import urlsplit

from server import metrics

log = logging.getLogger("server.store")


class StoreError(RuntimeError):
    """The database failed or is unusable."""


class StoreUnreachable(StoreError):
    """open() could not reach the database (refused, timed out, starting up or shutting down):
    unlike a refused login or a schema newer than the code, it may be there a moment later."""

    def __init__(self, database, reason):
        super().__init__("cannot open the database %s: %s" % (database, reason))
        self.database, self.reason = database, reason


class RefundRefused(ValueError):
    """A refund the store will not record: `reason` is 'not_paid', 'amount', 'count' or 'conflict'."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Store(Protocol):
    async def open(self):
        """Connect, and create or migrate the schema. Safe when several processes open the
        same database at once: the schema version is read and every migration applied in one
        write transaction, so exactly one of them migrates and the others find it done.
        Raises StoreError naming the database and why it cannot be used."""

    async def close(self):
        """Finish what was accepted, then release the database."""

    async def ping(self):
        """True when the database answers (health check)."""

    async def create_session(self, token_hash, openid, session_key, expires_at):
        """Store a session. Atomic; a token_hash already stored raises StoreError."""

    async def get_session(self, token_hash, now):
        """The Session for a token hash if it expires after `now`, else None. A read."""

    async def insert_order(self, order):
        """Store a new order (status NOTPAY) with its 'create' audit row; returns (order, True).
        Atomic. With an idempotency_key the same openid used before, returns (that earlier
        order, False) and writes nothing: concurrent callers with one key get one order."""

    async def get_order(self, out_trade_no):
        """The Order, or None. A read of committed data."""

    async def list_orders(self, openid, limit, before=None):
        """Up to `limit` of the openid's orders, newest first (created_at, then out_trade_no),
        after the cursor `before` = (created_at, out_trade_no). A read."""

    async def set_prepay(self, out_trade_no, prepay_id, prepay_expires_at):
        """Record a prepay_id if the order is still payable (NOTPAY, PAYERROR); returns the
        order, or None when it no longer is (a concurrent payment or close won). Atomic."""

    async def transition(self, out_trade_no, from_statuses, to_status, source, note=None, **fields):
        """Move an order from one of from_statuses to to_status, setting fields
        (transaction_id, time_end, checked_at), with an audit row naming the state it really
        left. Atomic and conditional: of concurrent callers moving the same order, exactly one
        sees changed=True; the others get changed=False and the order as it is now.
        `note` (a LoggedNotification): stored in the same transaction when it moved, else not.
        Returns (changed, order)."""

    async def mark_checked(self, out_trade_no, now):
        """Note that WeChat was asked about the order at `now`. Atomic; no state change."""

    async def claim_due(self, now, min_age, max_age, limit):
        """(orders, refunds) whose notification is late: unpaid orders with a prepay_id and
        open refunds, created between max_age and min_age seconds before `now`, not checked
        for a quarter of their age; at most `limit` of each, oldest first. Atomic: the rows
        returned are marked checked at `now` in the same transaction, and of concurrent
        callers (processes, hosts) each due row is handed to one only, so the sweep asks
        WeChat about it once per round."""

    async def events(self, out_trade_no):
        """The order's audit trail [(from, to, source)], oldest first. A read."""

    async def insert_refund(self, refund, max_refunds):
        """Store a new PENDING refund of a paid order. Atomic and checked in the same
        transaction: the refunds not released (REFUNDCLOSE, FAILED) never add up to more
        than total_fee nor number more than max_refunds, whatever concurrent callers do.
        With an idempotency_key already stored (for any order: a key is global), returns
        (that refund, False) before any check and writes nothing: concurrent callers with one
        key get one refund. The same out_refund_no with the same order and amount returns
        (stored refund, False). Raises RefundRefused('not_paid' | 'amount' | 'count' | 'conflict')."""

    async def get_refund(self, out_refund_no):
        """The Refund, or None. A read."""

    async def refunds_of(self, out_trade_no):
        """The order's refunds, oldest first. A read."""

    async def list_refunds(self, statuses, limit, before=None):
        """Up to `limit` refunds in any of `statuses`, newest first, after the cursor `before`
        = (created_at, out_refund_no). A read."""

    async def refund_transition(self, out_refund_no, from_statuses, to_status, source, note=None, **fields):
        """Move a refund as transition() moves an order, `note` too (fields: refund_id, success_time,
        error, checked_at). A refund reaching SUCCESS moves its order SUCCESS -> REFUND in the
        same transaction. Returns (changed, refund)."""

    async def mark_refund_checked(self, out_refund_no, now):
        """As mark_checked, for a refund."""

    async def refund_events(self, out_refund_no):
        """The refund's audit trail [(from, to, source)], oldest first. A read."""

    async def paid_orders_between(self, first, last):
        """Orders paid (SUCCESS, REFUND) whose time_end (yyyyMMddHHmmss, Beijing) is from
        `first` to `last`, both included. A read."""

    async def save_reconciliation(self, bill_date, report, unresolved, created_at):
        """Store a day's report (a dict of JSON values, kept as JSON) and its count of unresolved
        findings, replacing the day's earlier one. Atomic."""

    async def get_reconciliation(self, bill_date):
        """The day's stored report (the dict), or None. A read."""

    async def claim_reconciliation(self, bill_date, owner, now, lease):
        """Claim the daily run of a day for `owner` until now + lease: True when claimed. Atomic:
        of concurrent callers (processes, hosts) one only gets a day that nobody holds (no
        claim yet, or one whose lease has run out) and that is not done."""

    async def finish_reconciliation(self, bill_date, owner, now, retry_at=None):
        """The owner's run of the day ended: done at `now`, or (retry_at) not done, the day
        free to be claimed again from retry_at. Atomic; a claim lost to another owner is left."""

    async def log_notification(self, note):
        """Store a LoggedNotification (its id left out); returns the id given to it. Atomic."""

    async def get_notification(self, id):
        """The LoggedNotification with this id, or None. A read."""

    async def list_notifications(self, limit, before=None, out_trade_no=None, verdict=None):
        """Up to `limit` logged notifications (of that out_trade_no, with that verdict, when
        given), newest first (received_at, then id), after the cursor `before` = (received_at, id)."""

    async def prune_notifications(self, older_than):
        """Delete the logged notifications received before `older_than`; how many. Atomic."""


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def describe_url(url):
    """A DATABASE_URL fit for messages and logs: a PostgreSQL password left out."""
    if not is_postgres(url):
        return url
    try:
        parts = urlsplit(url)
        port = ":%d" % parts.port if parts.port else ""
    except ValueError:
        return url.split("://", 1)[0] + "://(unreadable URL)"
    user = "%s@" % parts.username if parts.username else ""
    if "@" in parts.path + parts.query + parts.fragment:   # a password with an unescaped "/" in it
        return parts.scheme + "://(unreadable URL)"
    return "%s://%s%s%s%s" % (parts.scheme, user, parts.hostname or "", port, parts.path)


def is_postgres(database_url):
    return database_url.startswith(POSTGRES_SCHEMES)


def open_store(database_url, clock=None, pool_size=None, timeout=None):
    """The Store for a DATABASE_URL: sqlite:///path or postgresql://user:password@host/db
    (pool_size connections per process, timeout seconds per statement: PostgreSQL only)."""
    kwargs = {} if clock is None else {"clock": clock}
    if is_postgres(database_url):
        from server.store.postgres.store import PostgresStore
        extra = {k: v for k, v in (("pool_size", pool_size), ("timeout", timeout)) if v}
        return PostgresStore(database_url, **kwargs, **extra)
    from server.store.sqlite.store import SQLiteStore
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        raise StoreError("unsupported DATABASE_URL (expected sqlite:///path or postgresql://...)")
    return SQLiteStore(database_url[len(prefix):], **kwargs)


class Outage:
    """A database outage logged as two lines, when operations start failing and when they work
    again, however many requests and sweeps fail in between (each still gets its StoreError).
    An operation in flight across a change does not flip it back: a success that began before
    the latest failure does not end the outage, a failure that began before the recovery does
    not start another. Times are monotonic; `started` is when the operation began."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.since = None          # when the current outage began; None: the database works
        self.failures = 0
        self.last_failure = self.recovered = float("-inf")

    def failed(self, exc, started):
        metrics.store_error()   # every failed operation, whether or not it starts an outage
        now = self.clock()
        if self.since is None:
            if started < self.recovered:
                return
            self.since, self.failures = now, 0
            log.error("database unavailable: %s", ": ".join(filter(None, [type(exc).__name__, str(exc).strip()])))
        self.failures += 1
        self.last_failure = now

    def answered(self, started):
        if self.since is not None and started > self.last_failure:
            now = self.clock()
            log.warning("database available again after %.1f s (%d operations failed)",
                        now - self.since, self.failures)
            self.since, self.recovered = None, now


WAIT_DELAYS = 0.5, 5.0   # seconds between attempts to reach the database: from 0.5, doubled up to 5


async def open_waiting(store, wait, sleep=asyncio.sleep, clock=time.monotonic):
    """store.open(), tried again while the database is unreachable, for up to `wait` seconds
    (0: once), as when the database and the backend start together: a log line per failed
    attempt, then StoreError naming the database (never its password)."""
    deadline, delay, attempt = clock() + wait, WAIT_DELAYS[0], 1
    while True:
        try:
            return await store.open()
        except StoreUnreachable as exc:
            if wait <= 0:
                raise
            left = deadline - clock()
            if left <= 0:
                raise StoreError("%s (still not reachable after %g s)" % (exc, wait)) from None
            pause = min(delay, left)
            log.warning("database %s not reachable (%s); retrying in %gs (attempt %d, up to %g s)",
                        exc.database, exc.reason, round(pause, 1), attempt, wait)
            await sleep(pause)
            delay, attempt = min(delay * 2, WAIT_DELAYS[1]), attempt + 1
