"""The Store on SQLite (WAL): every state change is one conditional transaction.

The guarantees are those of the Store contract (server/store/__init__.py). How they are
met here: SQLite work runs on one dedicated thread so the IOLoop never waits on the disk,
and that thread's single connection serialises this process's writes; other processes on
the same file queue on SQLite's write lock (BEGIN IMMEDIATE, busy timeout).

Group commit: operations that queue up while the thread is busy run as one batch inside
one transaction, each in its own SAVEPOINT (a failing operation rolls back alone), and
one COMMIT (one fsync) makes the whole batch durable before any caller hears back.
"""
import asyncio
import collections
import dataclasses
import logging
import os
import queue
import sqlite3
import threading
import time

from server.domain import (ORDER, PAID, PAYABLE, REFUND, REFUND_RECORD, REFUND_OPEN, REFUND_RELEASED, SUCCESS,
                           Order, Refund, Session, check_move)
from server.store import Outage, RefundRefused, StoreError

log = logging.getLogger("server.store")

SCHEMA_VERSION = 4
BUSY_TIMEOUT = 10  # seconds a statement waits for another process's write lock
_MIGRATIONS = {
    1: """
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        openid TEXT NOT NULL,
        session_key TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE orders (
        out_trade_no TEXT PRIMARY KEY,
        openid TEXT NOT NULL,
        product_id TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        body TEXT NOT NULL,
        total_fee INTEGER NOT NULL CHECK (total_fee > 0),
        sign_type TEXT NOT NULL,
        status TEXT NOT NULL,
        prepay_id TEXT,
        prepay_expires_at REAL,
        transaction_id TEXT,
        time_end TEXT,
        idempotency_key TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        checked_at REAL
    );
    CREATE UNIQUE INDEX orders_idempotency ON orders (openid, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX orders_transaction ON orders (transaction_id);
    CREATE TABLE order_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        out_trade_no TEXT NOT NULL REFERENCES orders (out_trade_no),
        from_status TEXT,
        to_status TEXT NOT NULL,
        source TEXT NOT NULL,
        at REAL NOT NULL
    );
    """,
    2: """
    CREATE TABLE refunds (
        out_refund_no TEXT PRIMARY KEY,
        out_trade_no TEXT NOT NULL REFERENCES orders (out_trade_no),
        refund_fee INTEGER NOT NULL CHECK (refund_fee > 0),
        reason TEXT NOT NULL,
        status TEXT NOT NULL,
        refund_id TEXT,
        success_time TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        checked_at REAL
    );
    CREATE INDEX refunds_order ON refunds (out_trade_no);
    CREATE INDEX orders_status_created ON orders (status, created_at);
    CREATE TABLE refund_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        out_refund_no TEXT NOT NULL REFERENCES refunds (out_refund_no),
        from_status TEXT,
        to_status TEXT NOT NULL,
        source TEXT NOT NULL,
        at REAL NOT NULL
    );
    """,
    3: """
    CREATE INDEX refunds_status_created ON refunds (status, created_at);
    CREATE INDEX orders_openid_created ON orders (openid, created_at);
    """,
    4: """
    ALTER TABLE refunds ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX refunds_idempotency ON refunds (idempotency_key) WHERE idempotency_key IS NOT NULL;
    """,
}


_ORDER_COLUMNS = [f.name for f in dataclasses.fields(Order)]
_REFUND_COLUMNS = [f.name for f in dataclasses.fields(Refund)]


def _order(row):
    return Order(**{k: row[k] for k in _ORDER_COLUMNS})


def _refund(row):
    return Refund(**{k: row[k] for k in _REFUND_COLUMNS})


_Table = collections.namedtuple("_Table", "name key events convert kind")
_ORDERS = _Table("orders", "out_trade_no", "order_events", _order, ORDER)
_REFUNDS = _Table("refunds", "out_refund_no", "refund_events", _refund, REFUND_RECORD)


class SQLiteStore:
    """The Store (server/store/__init__.py) on one SQLite file."""
    MAX_BATCH = 256

    def __init__(self, path, clock=time.time):
        self.path = path
        self.clock = clock
        self._conn = None
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._loop = None
        self._outage = Outage()

    # -- lifecycle ---------------------------------------------------------------
    async def open(self):
        """Open (creating and migrating as needed). Raises StoreError naming the file and why."""
        self._loop = asyncio.get_running_loop()
        opened = self._loop.create_future()
        self._thread = threading.Thread(target=self._work, args=(opened,), name="sqlite", daemon=True)
        self._thread.start()
        try:
            await opened
        except Exception as exc:
            self._thread = None
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError("cannot open the database %s: %s" % (self.path, reason)) from exc

    async def close(self):
        if self._thread is not None:
            self._queue.put(None)
            await self._loop.run_in_executor(None, self._thread.join)
            self._thread = None

    async def ping(self):
        return await self._run(lambda: self._conn.execute("SELECT 1").fetchone()[0] == 1)

    async def _run(self, fn, *args):
        future = self._loop.create_future()
        self._queue.put((fn, args, future))
        return await self._wait(future, time.monotonic())

    async def _wait(self, future, started):
        """The operation's result; a driver error (sqlite3.Error, the whole of the module's)
        becomes StoreError, an outage (not a refused statement) logged once (see Outage)."""
        try:
            result = await future
        except (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError) as exc:
            log.error("database error: %s", exc)   # the statement refused: not an outage
            raise StoreError("database error") from exc
        except sqlite3.Error as exc:
            self._outage.failed(exc, started)
            raise StoreError("database error") from exc
        self._outage.answered(started)
        return result

    def _work(self, opened):
        """The database thread: open, then take what is queued and run it as one batch,
        answering the callers only after its COMMIT."""
        result, error = _call(self._open, ())
        if error is not None and self._conn is not None:
            self._conn.close()
            self._conn = None
        self._loop.call_soon_threadsafe(_deliver, [(opened, result, error)])
        if error is not None:
            return
        while True:
            batch = [self._queue.get()]
            while batch[-1] is not None and len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for job in batch if job is not None]
            if jobs:
                self._loop.call_soon_threadsafe(_deliver, self._answers(jobs))
            if batch[-1] is None:
                self._conn.close()
                return

    def _answers(self, jobs):
        """The batch's answers; whatever goes wrong, every caller gets one (the thread lives on)."""
        try:
            return self._run_batch(jobs)
        except Exception as exc:
            self._rollback()
            return [(future, None, exc) for _, _, future in jobs]

    def _run_batch(self, jobs):
        """[(future, result, exception)]: every job in its savepoint, one COMMIT for all.

        A job whose error aborted the whole transaction (disk full, I/O error) gets that error;
        the abort undid the jobs before it too, so all the others run again in a new batch.
        """
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(future, None, exc) for _, _, future in jobs]
        results = []
        for i, (fn, args, future) in enumerate(jobs):
            result, error = _call(fn, args)
            if not self._conn.in_transaction:
                error = error or StoreError("the transaction was aborted")
                rest = jobs[:i] + jobs[i + 1:]
                return [(future, None, error)] + (self._run_batch(rest) if rest else [])
            results.append((future, result, error))
        try:
            self._commit()
        except sqlite3.Error as exc:
            self._rollback()
            return [(future, None, exc) for _, _, future in jobs]
        return results

    def _commit(self):
        """The batch's COMMIT (on the database thread); callers hear back only after it."""
        self._conn.execute("COMMIT")

    def _rollback(self):
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            # the connection's state is unknown now: start again from what is on disk
            log.error("rollback failed (%s): reopening the database", exc)
            self._conn.close()
            self._open()

    def _open(self):
        folder = os.path.dirname(self.path) if self.path != ":memory:" else ""
        if folder:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise StoreError("cannot create its folder %s: %s" % (folder, exc.strerror)) from None
        # another process on the same file may hold its write lock: wait for it (busy_timeout)
        conn = self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                            timeout=BUSY_TIMEOUT)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=%d" % (BUSY_TIMEOUT * 1000))
        _switch_to_wal(conn)
        # FULL: a transaction acknowledged to a caller survives a power cut, not just a kill.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self):
        """Bring the schema to SCHEMA_VERSION. The version is read and every step applied in
        one write transaction (BEGIN IMMEDIATE takes the write lock first), so processes
        starting together on one file migrate it once: the others wait, then find it done."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError("database schema %d is newer than this code (%d)" % (version, SCHEMA_VERSION))
            for target in range(version + 1, SCHEMA_VERSION + 1):
                # statement by statement: executescript() would commit behind our back
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute("PRAGMA user_version=%d" % target)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        if version < SCHEMA_VERSION:
            log.info("database migrated from schema %d to %d", version, SCHEMA_VERSION)

    def _tx(self):
        return _Transaction(self._conn)

    # -- sessions ----------------------------------------------------------------
    async def create_session(self, token_hash, openid, session_key, expires_at):
        def op():
            with self._tx():
                self._conn.execute(
                    "INSERT INTO sessions (token_hash, openid, session_key, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?)", (token_hash, openid, session_key, self.clock(), expires_at))
        await self._run(op)

    async def get_session(self, token_hash, now):
        """The live session for a token hash, or None when unknown or expired."""
        def op():
            return self._conn.execute(
                "SELECT openid, session_key, expires_at FROM sessions"
                " WHERE token_hash = ? AND expires_at > ?", (token_hash, now)).fetchone()
        row = await self._run(op)
        return Session(**dict(row)) if row else None

    # -- orders ------------------------------------------------------------------
    async def insert_order(self, order):
        """Store a new order. Returns (stored order, created). With an idempotency key
        already used by the same openid, returns that earlier order and created=False."""
        def op():
            with self._tx():
                if order.idempotency_key is not None:
                    existing = self._conn.execute(
                        "SELECT * FROM orders WHERE openid = ? AND idempotency_key = ?",
                        (order.openid, order.idempotency_key)).fetchone()
                    if existing:
                        return _order(existing), False
                check_move(ORDER, (None,), order.status)
                values = dataclasses.asdict(order)
                self._conn.execute(
                    "INSERT INTO orders (%s) VALUES (%s)" % (
                        ", ".join(_ORDER_COLUMNS), ", ".join("?" * len(_ORDER_COLUMNS))),
                    [values[c] for c in _ORDER_COLUMNS])
                self._audit(_ORDERS, order.out_trade_no, None, order.status, "create", order.created_at)
                return order, True
        return await self._run(op)

    async def list_orders(self, openid, limit, before=None):
        """The openid's orders, newest first, at most `limit`; `before` is the
        (created_at, out_trade_no) of the last one of the previous page."""
        return await self._page(_ORDERS, "openid = ?", [openid], limit, before)

    async def get_order(self, out_trade_no):
        return await self._run(self._get, _ORDERS, out_trade_no)

    def _get(self, table, key):
        row = self._conn.execute("SELECT * FROM %s WHERE %s = ?" % (table.name, table.key), (key,)).fetchone()
        return table.convert(row) if row else None

    async def set_prepay(self, out_trade_no, prepay_id, prepay_expires_at):
        """Record the prepay_id of an unpaid order (NOTPAY, or PAYERROR being paid again) and
        return the order; None when it is no longer unpaid."""
        def op():
            with self._tx():
                cur = self._conn.execute(
                    "UPDATE orders SET prepay_id = ?, prepay_expires_at = ?, updated_at = ?"
                    " WHERE out_trade_no = ? AND status IN (?, ?)",
                    (prepay_id, prepay_expires_at, self.clock(), out_trade_no, *PAYABLE))
            return self._get(_ORDERS, out_trade_no) if cur.rowcount == 1 else None
        return await self._run(op)

    async def transition(self, out_trade_no, from_statuses, to_status, source, **fields):
        """Atomically move an order from one of from_statuses to to_status, setting fields.

        Returns (changed, order after the attempt). changed is False when the order was not
        in any of from_statuses (someone else got there first); nothing is written then.
        """
        if not set(fields) <= {"transaction_id", "time_end", "checked_at"}:
            raise ValueError("unexpected fields %r" % sorted(fields))

        def op():
            with self._tx():
                changed = self._move(_ORDERS, out_trade_no, from_statuses, to_status, source, fields)
            return changed, self._get(_ORDERS, out_trade_no)
        return await self._run(op)

    def _move(self, table, key, from_statuses, to_status, source, fields):
        """In the caller's transaction: the conditional UPDATE and its audit row. False when the
        row is missing or not in from_statuses (nothing written then)."""
        check_move(table.kind, from_statuses, to_status)  # the domain table decides what may move
        now = self.clock()
        row = self._conn.execute("SELECT status FROM %s WHERE %s = ?" % (table.name, table.key), (key,)).fetchone()
        if row is None:
            return False
        sets = ["status = ?", "updated_at = ?"] + ["%s = ?" % k for k in fields]
        cur = self._conn.execute("UPDATE %s SET %s WHERE %s = ? AND status IN (%s)" % (
            table.name, ", ".join(sets), table.key, ", ".join("?" * len(from_statuses))),
            [to_status, now, *fields.values(), key, *from_statuses])
        if cur.rowcount != 1:
            return False
        self._audit(table, key, row["status"], to_status, source, now)
        return True

    async def claim_due(self, now, min_age, max_age, limit):
        """Unpaid orders with a prepay_id and open refunds (PENDING, PROCESSING) created between
        max_age and min_age seconds ago, and not checked for a quarter of their age (so each
        is asked about a handful of times, not every sweep), marked checked at `now` in the
        same transaction. Returns (orders, refunds)."""
        due = ("created_at BETWEEN ? AND ? AND (checked_at IS NULL OR checked_at < ? - (? - created_at) / 4.0)"
               " ORDER BY created_at LIMIT ?")
        args = (now - max_age, now - min_age, now, now, limit)

        def claim(table, sql, states):
            with self._tx():
                rows = self._conn.execute(sql, (*states, *args)).fetchall()
                self._conn.executemany("UPDATE %s SET checked_at = ? WHERE %s = ?" % (table.name, table.key),
                                       [(now, row[table.key]) for row in rows])
            return [table.convert(dict(row, checked_at=now)) for row in rows]

        def op():
            orders = claim(_ORDERS, "SELECT * FROM orders WHERE status IN (?, ?) AND prepay_id IS NOT NULL"
                                    " AND " + due, PAYABLE)
            refunds = claim(_REFUNDS, "SELECT * FROM refunds WHERE status IN (?, ?) AND " + due, REFUND_OPEN)
            return orders, refunds
        return await self._run(op)

    async def mark_checked(self, out_trade_no, now):
        await self._mark_checked(_ORDERS, out_trade_no, now)

    async def events(self, out_trade_no):
        """The audit trail of an order's transitions: [(from, to, source)] oldest first."""
        return await self._audit_trail(_ORDERS, out_trade_no)

    async def _mark_checked(self, table, key, now):
        def op():
            with self._tx():
                self._conn.execute("UPDATE %s SET checked_at = ? WHERE %s = ?" % (table.name, table.key), (now, key))
        await self._run(op)

    async def _audit_trail(self, table, key):
        def op():
            return self._conn.execute("SELECT from_status, to_status, source FROM %s WHERE %s = ? ORDER BY id"
                                      % (table.events, table.key), (key,)).fetchall()
        return [tuple(r) for r in await self._run(op)]

    def _audit(self, table, key, from_status, to_status, source, at):
        self._conn.execute("INSERT INTO %s (%s, from_status, to_status, source, at) VALUES (?, ?, ?, ?, ?)"
                           % (table.events, table.key), (key, from_status, to_status, source, at))

    # -- refunds -----------------------------------------------------------------
    async def insert_refund(self, refund, max_refunds):
        """Record a new refund of a paid order, checking in the same transaction that the
        refunds not released (REFUNDCLOSE, FAILED) never add up to more than total_fee and
        number at most max_refunds. Returns (refund, created); a refund stored with the same
        idempotency_key, or the same out_refund_no with the same order and amount, returns the
        stored refund. Raises RefundRefused. This process's writes are serialised on the
        database thread and other processes' by BEGIN IMMEDIATE: the look-up and the insert
        are one step, so one key is one refund."""
        def op():
            with self._tx():
                existing = self._stored_refund(refund)
                if existing:
                    return existing, False
                order = self._conn.execute("SELECT status, total_fee FROM orders WHERE out_trade_no = ?",
                                           (refund.out_trade_no,)).fetchone()
                if order is None or order["status"] not in PAID:
                    raise RefundRefused("not_paid")
                marks = ", ".join("?" * len(REFUND_RELEASED))
                committed, count = self._conn.execute(
                    "SELECT coalesce(sum(refund_fee), 0), count(*) FROM refunds"
                    " WHERE out_trade_no = ? AND status NOT IN (%s)" % marks,
                    (refund.out_trade_no, *REFUND_RELEASED)).fetchone()
                if count >= max_refunds:
                    raise RefundRefused("count")
                if committed + refund.refund_fee > order["total_fee"]:
                    raise RefundRefused("amount")
                check_move(REFUND_RECORD, (None,), refund.status)
                values = dataclasses.asdict(refund)
                self._conn.execute("INSERT INTO refunds (%s) VALUES (%s)" % (
                    ", ".join(_REFUND_COLUMNS), ", ".join("?" * len(_REFUND_COLUMNS))),
                    [values[c] for c in _REFUND_COLUMNS])
                self._audit(_REFUNDS, refund.out_refund_no, None, refund.status, "create", refund.created_at)
                return refund, True
        return await self._run(op)

    def _stored_refund(self, refund):
        """In the caller's transaction: the refund stored with refund's idempotency_key, else
        with its out_refund_no (RefundRefused('conflict') if of another order or amount), else None."""
        if refund.idempotency_key is not None:
            row = self._conn.execute("SELECT * FROM refunds WHERE idempotency_key = ?",
                                     (refund.idempotency_key,)).fetchone()
            if row:
                return _refund(row)
        row = self._conn.execute("SELECT * FROM refunds WHERE out_refund_no = ?", (refund.out_refund_no,)).fetchone()
        if row and (row["out_trade_no"], row["refund_fee"]) != (refund.out_trade_no, refund.refund_fee):
            raise RefundRefused("conflict")
        return _refund(row) if row else None

    async def get_refund(self, out_refund_no):
        return await self._run(self._get, _REFUNDS, out_refund_no)

    async def refunds_of(self, out_trade_no):
        """The order's refunds, oldest first."""
        def op():
            return self._conn.execute("SELECT * FROM refunds WHERE out_trade_no = ? ORDER BY created_at, rowid",
                                      (out_trade_no,)).fetchall()
        return [_refund(r) for r in await self._run(op)]

    async def refund_transition(self, out_refund_no, from_statuses, to_status, source, **fields):
        """Atomically move a refund between states; a refund reaching SUCCESS moves its paid
        order to REFUND in the same transaction. Returns (changed, refund after the attempt)."""
        if not set(fields) <= {"refund_id", "success_time", "error", "checked_at"}:
            raise ValueError("unexpected fields %r" % sorted(fields))

        def op():
            with self._tx():
                moved = self._move(_REFUNDS, out_refund_no, from_statuses, to_status, source, fields)
                if moved and to_status == SUCCESS:
                    out_trade_no = self._conn.execute("SELECT out_trade_no FROM refunds WHERE out_refund_no = ?",
                                                      (out_refund_no,)).fetchone()[0]
                    self._move(_ORDERS, out_trade_no, (SUCCESS,), REFUND, "refund " + out_refund_no, {})
            return moved, self._get(_REFUNDS, out_refund_no)
        return await self._run(op)

    async def list_refunds(self, statuses, limit, before=None):
        """Refunds in any of `statuses`, newest first, at most `limit`; `before` is the
        (created_at, out_refund_no) of the last one of the previous page."""
        where = "status IN (%s)" % ", ".join("?" * len(statuses))
        return await self._page(_REFUNDS, where, list(statuses), limit, before)

    async def _page(self, table, where, args, limit, before):
        """Rows matching `where`, newest first (created_at, then key), after the cursor `before`."""
        sql = "SELECT * FROM %s WHERE %s" % (table.name, where)
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND %s < ?))" % table.key
            args = args + [before[0], before[0], before[1]]
        sql += " ORDER BY created_at DESC, %s DESC LIMIT ?" % table.key
        rows = await self._run(lambda: self._conn.execute(sql, args + [limit]).fetchall())
        return [table.convert(r) for r in rows]

    async def mark_refund_checked(self, out_refund_no, now):
        await self._mark_checked(_REFUNDS, out_refund_no, now)

    async def refund_events(self, out_refund_no):
        """The audit trail of a refund: [(from, to, source)] oldest first."""
        return await self._audit_trail(_REFUNDS, out_refund_no)

def _switch_to_wal(conn):
    """PRAGMA journal_mode=WAL. On a new file that other processes are opening too, SQLite can
    answer "database is locked" here without waiting (the busy handler is not used for
    this lock): retry for up to BUSY_TIMEOUT."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    delay = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    if mode.lower() != "wal" and conn.execute("PRAGMA database_list").fetchone()[2]:
        raise StoreError("the database could not be switched to WAL mode (journal mode %s)" % mode)


class _Transaction:
    """One operation's unit of work inside its batch's transaction: a SAVEPOINT, released on
    success, rolled back alone on any exception (the batch's other operations stand)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("SAVEPOINT op")

    def __exit__(self, exc_type, *_):
        if exc_type:
            self.conn.execute("ROLLBACK TO op")
        self.conn.execute("RELEASE op")
        return False


def _call(fn, args):
    """(result, None) or (None, exception) of fn(*args)."""
    try:
        return fn(*args), None
    except Exception as exc:  # delivered to the caller's future, re-raised there
        return None, exc


def _deliver(results):
    for future, result, exc in results:
        if future.cancelled():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
