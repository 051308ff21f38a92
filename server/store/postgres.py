"""The Store on PostgreSQL (asyncpg): several processes and hosts on one database.

The guarantees are those of the Store contract (server/store/__init__.py), each one made
explicit in SQL rather than left to the isolation level (READ COMMITTED, the default):
- an idempotency key (an order's, a refund's): INSERT ... ON CONFLICT DO NOTHING, then the
  winner's row;
- a move: one conditional UPDATE whose FROM clause locks the row (FOR UPDATE) and hands
  the status it really had to RETURNING, the audit row written by the same statement;
- a refund: the order row locked (FOR UPDATE) while the refunds are summed and the new one
  inserted, so concurrent refunds of one order queue on that lock;
- the sweep: due rows claimed with FOR UPDATE SKIP LOCKED and marked checked in the same
  statement, so each is handed to one process per round.
Transactions are short (no WeChat call inside one), the pool is bounded, every statement
has a timeout, and deadlocks or serialization failures are retried.
"""
import asyncio
import dataclasses
import logging
import time

from server.domain import (ORDER, PAID, PAYABLE, REFUND, REFUND_RECORD, REFUND_OPEN, REFUND_RELEASED, SUCCESS,
                           Order, Refund, Session, check_move)
from server.store import Outage, RefundRefused, StoreError, StoreUnreachable, describe_url

log = logging.getLogger("server.store")

SCHEMA_VERSION = 4
POOL_SIZE = 10            # connections per process (DATABASE_POOL_SIZE)
STATEMENT_TIMEOUT = 5.0   # seconds (DATABASE_TIMEOUT): a statement, a pool wait, a connect
MIGRATION_TIMEOUT = 3600.0   # seconds: a migration step, or waiting for another process's
RETRIES = 3               # deadlock / serialization failure: the whole operation again
_MIGRATION_LOCK = 7_230_417_190_315   # pg_advisory_xact_lock key: one migrator at a time

_MIGRATIONS = {
    1: """
    CREATE TABLE sessions (
        token_hash text COLLATE "C" PRIMARY KEY,
        openid text NOT NULL,
        session_key text NOT NULL,
        created_at double precision NOT NULL,
        expires_at double precision NOT NULL
    );
    CREATE TABLE orders (
        out_trade_no text COLLATE "C" PRIMARY KEY,
        openid text COLLATE "C" NOT NULL,
        product_id text NOT NULL,
        quantity integer NOT NULL,
        body text NOT NULL,
        total_fee integer NOT NULL CHECK (total_fee > 0),
        sign_type text NOT NULL,
        status text NOT NULL,
        prepay_id text,
        prepay_expires_at double precision,
        transaction_id text,
        time_end text,
        idempotency_key text COLLATE "C",
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        checked_at double precision
    );
    CREATE UNIQUE INDEX orders_idempotency ON orders (openid, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX orders_transaction ON orders (transaction_id);
    CREATE TABLE order_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        out_trade_no text COLLATE "C" NOT NULL REFERENCES orders (out_trade_no),
        from_status text,
        to_status text NOT NULL,
        source text NOT NULL,
        at double precision NOT NULL
    );
    CREATE INDEX order_events_order ON order_events (out_trade_no);
    """,
    2: """
    CREATE TABLE refunds (
        out_refund_no text COLLATE "C" PRIMARY KEY,
        out_trade_no text COLLATE "C" NOT NULL REFERENCES orders (out_trade_no),
        refund_fee integer NOT NULL CHECK (refund_fee > 0),
        reason text NOT NULL,
        status text NOT NULL,
        refund_id text,
        success_time text,
        error text,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        checked_at double precision,
        seq bigint GENERATED ALWAYS AS IDENTITY
    );
    CREATE INDEX refunds_order ON refunds (out_trade_no);
    CREATE INDEX orders_status_created ON orders (status, created_at);
    CREATE TABLE refund_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        out_refund_no text COLLATE "C" NOT NULL REFERENCES refunds (out_refund_no),
        from_status text,
        to_status text NOT NULL,
        source text NOT NULL,
        at double precision NOT NULL
    );
    CREATE INDEX refund_events_refund ON refund_events (out_refund_no);
    """,
    3: """
    CREATE INDEX refunds_status_created ON refunds (status, created_at);
    CREATE INDEX orders_openid_created ON orders (openid, created_at);
    """,
    4: """
    ALTER TABLE refunds ADD COLUMN idempotency_key text COLLATE "C";
    CREATE UNIQUE INDEX refunds_idempotency ON refunds (idempotency_key) WHERE idempotency_key IS NOT NULL;
    """,
}

_ORDER_COLUMNS = [f.name for f in dataclasses.fields(Order)]
_REFUND_COLUMNS = [f.name for f in dataclasses.fields(Refund)]
_ORDER_FIELDS = {"transaction_id", "time_end", "checked_at"}
_REFUND_FIELDS = {"refund_id", "success_time", "error", "checked_at"}


def _order(row):
    return Order(**{k: row[k] for k in _ORDER_COLUMNS})


def _refund(row):
    return Refund(**{k: row[k] for k in _REFUND_COLUMNS})


@dataclasses.dataclass(frozen=True)
class _Table:
    name: str
    key: str
    events: str
    convert: object
    kind: str
    fields: frozenset


_ORDERS = _Table("orders", "out_trade_no", "order_events", _order, ORDER, frozenset(_ORDER_FIELDS))
_REFUNDS = _Table("refunds", "out_refund_no", "refund_events", _refund, REFUND_RECORD, frozenset(_REFUND_FIELDS))


def _insert_sql(table, columns):
    return "INSERT INTO %s (%s) VALUES (%s)" % (
        table, ", ".join(columns), ", ".join("$%d" % (i + 1) for i in range(len(columns))))


class PostgresStore:
    """The Store (server/store/__init__.py) on one PostgreSQL database."""

    def __init__(self, url, clock=time.time, pool_size=POOL_SIZE, timeout=STATEMENT_TIMEOUT):
        self.url = url
        self.clock = clock
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool = None
        self._outage = Outage()

    # -- lifecycle ---------------------------------------------------------------
    async def open(self, schema_version=SCHEMA_VERSION):
        """Connect and migrate. Raises StoreError naming the database (without its password)."""
        import asyncpg   # only a PostgreSQL deployment needs the driver loaded
        # whatever the driver or the network raises: asyncpg's three roots (InternalClientError,
        # e.g. "cannot switch to state 12" on a connection PostgreSQL dropped mid-operation, is
        # neither of the other two) and the socket's errors (OSError: ConnectionError, TimeoutError).
        # Not Exception: a TypeError or KeyError of our own code is a bug (500), not an outage.
        self._errors = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
                        asyncio.TimeoutError)
        self._retryable = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
        # the database answered and refused the statement (bad data, a constraint, the SQL or a
        # privilege): an error of its own, not an outage
        self._refused = (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError,
                         asyncpg.exceptions.SyntaxOrAccessError)
        # no answer from a database (yet): a network or connection failure, or a server starting
        # up, shutting down or full, as opposed to a refused login, a missing database, a newer schema
        self._unreachable = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InternalClientError,
                             asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
                             asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.TooManyConnectionsError)
        self._unique = asyncpg.exceptions.UniqueViolationError
        millis = str(int(self.timeout * 1000))
        try:
            # min_size=0: a pool keeping a floor of connections reconnects in the background
            # during an outage and logs a traceback each time (the store logs the outage once)
            self._pool = await asyncpg.create_pool(
                self.url, min_size=0, max_size=self.pool_size, timeout=self.timeout,
                command_timeout=self.timeout + 1,
                server_settings={"statement_timeout": millis, "lock_timeout": millis,
                                 "idle_in_transaction_session_timeout": str(int(self.timeout * 4000)),
                                 "application_name": "wxpay-tornado"},
                reset=_keep_session)
            await self._migrate(schema_version)
        except (StoreError, *self._errors, ValueError) as exc:
            await self.close()
            reason = exc if isinstance(exc, StoreError) else (str(exc).strip() or type(exc).__name__)
            if isinstance(exc, self._unreachable):
                raise StoreUnreachable(describe_url(self.url), reason) from None
            raise StoreError("cannot open the database %s: %s" % (describe_url(self.url), reason)) from None

    async def close(self):
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout * 2)
            except (asyncio.TimeoutError, *self._errors):
                pool.terminate()

    async def ping(self):
        return await self._run(lambda conn: conn.fetchval("SELECT 1")) == 1

    async def _migrate(self, target):
        """Bring the schema to `target`. The version is read first: a current schema needs no
        lock and no DDL right (a role that may only read and write can start). Otherwise one
        transaction holding an advisory lock, without the statement and lock timeouts (a
        migration of a large table, or waiting for another process's, may take minutes):
        processes starting together queue on it, the first migrates, the others find it done."""
        async with self._pool.acquire() as conn:
            if await self._version(conn) == target:
                return
            async with conn.transaction():
                await conn.execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
                await conn.execute("SELECT pg_advisory_xact_lock(%d)" % _MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT)
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
                version = await self._version(conn)
                if version > SCHEMA_VERSION:
                    raise StoreError("database schema %d is newer than this code (%d)" % (version, SCHEMA_VERSION))
                for step in range(version + 1, target + 1):
                    await conn.execute(_MIGRATIONS[step], timeout=MIGRATION_TIMEOUT)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", step)
        if version < target:
            log.info("database migrated from schema %d to %d", version, target)

    @staticmethod
    async def _version(conn):
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            return 0
        version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
        if version > SCHEMA_VERSION:
            raise StoreError("database schema %d is newer than this code (%d)" % (version, SCHEMA_VERSION))
        return version

    async def schema_version(self):
        return await self._run(lambda conn: conn.fetchval("SELECT max(version) FROM schema_version"))

    async def _run(self, op):
        """op(connection) with a pooled connection; database errors become StoreError (an
        outage logged once, see Outage), and an operation that lost a deadlock or a
        serialization conflict runs again."""
        if self._pool is None:
            raise StoreError("the database is not open")
        started = time.monotonic()
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire(timeout=self.timeout) as conn:
                    result = await op(conn)
                self._outage.answered(started)
                return result
            except self._retryable as exc:
                if attempt == RETRIES - 1:   # the database answered each time: not an outage
                    log.error("database error after %d attempts: %s: %s", RETRIES, type(exc).__name__, exc)
                    raise StoreError("database error") from exc
                await asyncio.sleep(0.01 * (attempt + 1))
            except self._refused as exc:
                log.error("database error: %s: %s", type(exc).__name__, exc)
                raise StoreError("database error") from exc
            except self._errors as exc:
                self._outage.failed(exc, started)
                raise StoreError("database error") from exc

    # -- sessions ----------------------------------------------------------------
    async def create_session(self, token_hash, openid, session_key, expires_at):
        await self._run(lambda conn: conn.execute(
            "INSERT INTO sessions (token_hash, openid, session_key, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)", token_hash, openid, session_key, self.clock(), expires_at))

    async def get_session(self, token_hash, now):
        row = await self._run(lambda conn: conn.fetchrow(
            "SELECT openid, session_key, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2",
            token_hash, now))
        return Session(**dict(row)) if row else None

    # -- orders ------------------------------------------------------------------
    async def insert_order(self, order):
        check_move(ORDER, (None,), order.status)
        values = dataclasses.asdict(order)
        n = len(_ORDER_COLUMNS)
        # one statement (one round trip, atomic by itself): the insert, and its audit row if it inserted
        insert = ("WITH created AS (" + _insert_sql("orders", _ORDER_COLUMNS)
                  + " ON CONFLICT (openid, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
                  " RETURNING out_trade_no, status, created_at),"
                  " audit AS (INSERT INTO order_events (out_trade_no, from_status, to_status, source, at)"
                  "  SELECT out_trade_no, NULL, status, $%d, created_at FROM created)"
                  " SELECT out_trade_no FROM created" % (n + 1))

        async def op(conn):
            if await conn.fetchval(insert, *[values[c] for c in _ORDER_COLUMNS], "create") is not None:
                return order, True
            # the key was taken: by a committed order (ON CONFLICT waited for its transaction)
            row = await conn.fetchrow("SELECT * FROM orders WHERE openid = $1 AND idempotency_key = $2",
                                      order.openid, order.idempotency_key)
            if row is None:   # taken, then rolled back: let the caller try again
                raise StoreError("an order with this idempotency key is being written")
            return _order(row), False
        return await self._run(op)

    async def get_order(self, out_trade_no):
        return await self._run(lambda conn: self._get(conn, _ORDERS, out_trade_no))

    async def _get(self, conn, table, key):
        row = await conn.fetchrow("SELECT * FROM %s WHERE %s = $1" % (table.name, table.key), key)
        return table.convert(row) if row else None

    async def list_orders(self, openid, limit, before=None):
        return await self._page(_ORDERS, "openid = $1", [openid], limit, before)

    async def set_prepay(self, out_trade_no, prepay_id, prepay_expires_at):
        row = await self._run(lambda conn: conn.fetchrow(
            "UPDATE orders SET prepay_id = $1, prepay_expires_at = $2, updated_at = $3"
            " WHERE out_trade_no = $4 AND status = ANY($5::text[]) RETURNING *",
            prepay_id, prepay_expires_at, self.clock(), out_trade_no, list(PAYABLE)))
        return _order(row) if row else None

    async def transition(self, out_trade_no, from_statuses, to_status, source, **fields):
        return await self._transition(_ORDERS, out_trade_no, from_statuses, to_status, source, fields)

    async def refund_transition(self, out_refund_no, from_statuses, to_status, source, **fields):
        return await self._transition(_REFUNDS, out_refund_no, from_statuses, to_status, source, fields)

    async def _transition(self, table, key, from_statuses, to_status, source, fields):
        if not set(fields) <= table.fields:
            raise ValueError("unexpected fields %r" % sorted(fields))
        check_move(table.kind, from_statuses, to_status)   # the domain table decides what may move
        cascade = table is _REFUNDS and to_status == SUCCESS

        async def op(conn):
            if not cascade:   # one statement: atomic by itself, one round trip
                row = await self._move(conn, table, key, from_statuses, to_status, source, fields)
            else:
                async with conn.transaction():
                    row = await self._move(conn, table, key, from_statuses, to_status, source, fields)
                    if row is not None:   # the refund's order: SUCCESS -> REFUND, same transaction
                        await self._move(conn, _ORDERS, row["out_trade_no"], (SUCCESS,), REFUND,
                                         "refund " + key, {})
            if row is None:
                return False, await self._get(conn, table, key)
            return True, table.convert(row)
        return await self._run(op)

    async def _move(self, conn, table, key, from_statuses, to_status, source, fields):
        """One statement: the conditional UPDATE, its audit row naming the status the row really
        left (read under the row lock taken in FROM), the new row returned; None if not moved."""
        sets = ", ".join(["status = $2", "updated_at = $3"] + ["%s = $%d" % (k, i + 6) for i, k in enumerate(fields)])
        sql = ("WITH moved AS ("
               " UPDATE {t} AS cur SET {sets}"
               " FROM (SELECT {k}, status FROM {t} WHERE {k} = $1 FOR UPDATE) AS prev"
               " WHERE cur.{k} = prev.{k} AND prev.status = ANY($4::text[])"
               " RETURNING cur.*, prev.status AS from_status),"
               " audit AS (INSERT INTO {e} ({k}, from_status, to_status, source, at)"
               "  SELECT {k}, from_status, status, $5, $3 FROM moved)"
               " SELECT * FROM moved").format(t=table.name, k=table.key, e=table.events, sets=sets)
        return await conn.fetchrow(sql, key, to_status, self.clock(), list(from_statuses), source, *fields.values())

    async def mark_checked(self, out_trade_no, now):
        await self._mark_checked(_ORDERS, out_trade_no, now)

    async def mark_refund_checked(self, out_refund_no, now):
        await self._mark_checked(_REFUNDS, out_refund_no, now)

    async def _mark_checked(self, table, key, now):
        await self._run(lambda conn: conn.execute(
            "UPDATE %s SET checked_at = $1 WHERE %s = $2" % (table.name, table.key), now, key))

    async def claim_due(self, now, min_age, max_age, limit):
        """Claim the due orders and refunds: rows locked by another process's claim are skipped
        (SKIP LOCKED), the claimed ones marked checked at `now` in the same statement, so each
        is handed out once per round whatever the number of processes and hosts."""
        due = ("created_at BETWEEN $1 AND $2 AND (checked_at IS NULL OR checked_at < $3 - ($3 - created_at) / 4.0)")
        args = (now - max_age, now - min_age, now, limit)

        def claim(table, condition, states):
            return ("UPDATE {t} SET checked_at = $3 WHERE {k} IN ("
                    " SELECT {k} FROM {t} WHERE status = ANY($5::text[]) AND {cond} AND {due}"
                    " ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING *").format(
                        t=table.name, k=table.key, cond=condition, due=due), (*args, list(states))

        async def op(conn):
            async with conn.transaction():
                orders = await conn.fetch(*_flat(claim(_ORDERS, "prepay_id IS NOT NULL", PAYABLE)))
                refunds = await conn.fetch(*_flat(claim(_REFUNDS, "TRUE", REFUND_OPEN)))
            return (sorted((_order(r) for r in orders), key=lambda o: o.created_at),
                    sorted((_refund(r) for r in refunds), key=lambda r: r.created_at))
        return await self._run(op)

    async def events(self, out_trade_no):
        return await self._audit_trail(_ORDERS, out_trade_no)

    async def refund_events(self, out_refund_no):
        return await self._audit_trail(_REFUNDS, out_refund_no)

    async def _audit_trail(self, table, key):
        rows = await self._run(lambda conn: conn.fetch(
            "SELECT from_status, to_status, source FROM %s WHERE %s = $1 ORDER BY id" % (table.events, table.key), key))
        return [tuple(r) for r in rows]

    async def _audit(self, conn, table, key, from_status, to_status, source, at):
        await conn.execute("INSERT INTO %s (%s, from_status, to_status, source, at) VALUES ($1, $2, $3, $4, $5)"
                           % (table.events, table.key), key, from_status, to_status, source, at)

    # -- refunds -----------------------------------------------------------------
    async def insert_refund(self, refund, max_refunds):
        check_move(REFUND_RECORD, (None,), refund.status)
        values = dataclasses.asdict(refund)
        insert = (_insert_sql("refunds", _REFUND_COLUMNS) + " ON CONFLICT (idempotency_key)"
                  " WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING out_refund_no")

        async def op(conn):
            async with conn.transaction():
                # the order row's lock serialises every refund of this order, across processes
                order = await conn.fetchrow("SELECT status, total_fee FROM orders WHERE out_trade_no = $1 FOR UPDATE",
                                            refund.out_trade_no)
                existing = await _stored_refund(conn, refund)
                if existing:
                    return existing, False
                if order is None or order["status"] not in PAID:
                    raise RefundRefused("not_paid")
                committed, count = await conn.fetchrow(
                    "SELECT coalesce(sum(refund_fee), 0), count(*) FROM refunds"
                    " WHERE out_trade_no = $1 AND NOT (status = ANY($2::text[]))",
                    refund.out_trade_no, list(REFUND_RELEASED))
                if count >= max_refunds:
                    raise RefundRefused("count")
                if committed + refund.refund_fee > order["total_fee"]:
                    raise RefundRefused("amount")
                if await conn.fetchval(insert, *[values[c] for c in _REFUND_COLUMNS]) is None:
                    # the key was taken meanwhile by a refund of another order (whose lock we do not
                    # hold): ON CONFLICT waited for its transaction, so it is committed now
                    return await _refund_by_key(conn, refund.idempotency_key), False
                await self._audit(conn, _REFUNDS, refund.out_refund_no, None, refund.status, "create",
                                  refund.created_at)
                return refund, True

        try:
            return await self._run(op)
        except StoreError as exc:
            if not isinstance(exc.__cause__, self._unique):
                raise
        # the same out_refund_no was inserted concurrently for another order: it is stored now
        existing = await self._run(lambda conn: conn.fetchrow(
            "SELECT * FROM refunds WHERE out_refund_no = $1", refund.out_refund_no))
        if existing is None:
            raise StoreError("database error")
        return _same_refund(existing, refund)

    async def get_refund(self, out_refund_no):
        return await self._run(lambda conn: self._get(conn, _REFUNDS, out_refund_no))

    async def refunds_of(self, out_trade_no):
        rows = await self._run(lambda conn: conn.fetch(
            "SELECT * FROM refunds WHERE out_trade_no = $1 ORDER BY created_at, seq", out_trade_no))
        return [_refund(r) for r in rows]

    async def list_refunds(self, statuses, limit, before=None):
        return await self._page(_REFUNDS, "status = ANY($1::text[])", [list(statuses)], limit, before)

    async def _page(self, table, where, args, limit, before):
        """Rows matching `where`, newest first (created_at, then key), after the cursor `before`."""
        sql = "SELECT * FROM %s WHERE %s" % (table.name, where)
        args = list(args)
        if before is not None:
            n = len(args)
            sql += " AND (created_at, %s) < ($%d, $%d)" % (table.key, n + 1, n + 2)
            args += [float(before[0]), before[1]]
        sql += " ORDER BY created_at DESC, %s DESC LIMIT $%d" % (table.key, len(args) + 1)
        rows = await self._run(lambda conn: conn.fetch(sql, *args, limit))
        return [table.convert(r) for r in rows]


async def _keep_session(conn):
    """The pool's reset on release, instead of asyncpg's RESET ALL / UNLISTEN / advisory unlock
    (a round trip per operation): this store leaves no session state behind (SET LOCAL and
    transaction-level advisory locks only; asyncpg itself still rolls back an open transaction)."""


async def _stored_refund(conn, refund):
    """The refund stored with refund's idempotency_key, else with its out_refund_no
    (RefundRefused('conflict') if of another order or amount), else None."""
    if refund.idempotency_key is not None:
        row = await conn.fetchrow("SELECT * FROM refunds WHERE idempotency_key = $1", refund.idempotency_key)
        if row:
            return _refund(row)
    row = await conn.fetchrow("SELECT * FROM refunds WHERE out_refund_no = $1", refund.out_refund_no)
    return _same_refund(row, refund)[0] if row else None


async def _refund_by_key(conn, key):
    row = await conn.fetchrow("SELECT * FROM refunds WHERE idempotency_key = $1", key)
    if row is None:   # taken, then rolled back: let the caller try again
        raise StoreError("a refund with this idempotency key is being written")
    return _refund(row)


def _same_refund(existing, refund):
    if (existing["out_trade_no"], existing["refund_fee"]) != (refund.out_trade_no, refund.refund_fee):
        raise RefundRefused("conflict")
    return _refund(existing), False


def _flat(statement):
    sql, args = statement
    return (sql, *args)
