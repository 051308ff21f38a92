"""The PostgreSQL schema: each migration's SQL, the version check, and the migration under an advisory lock."""
import logging

from server.store import StoreError

log = logging.getLogger("server.store")

SCHEMA_VERSION = 7
MIGRATION_TIMEOUT = 3600.0   # seconds: a migration step, or waiting for another process's
_MIGRATION_LOCK = 7_230_417_190_315   # pg_advisory_xact_lock key: one migrator at a time

MIGRATIONS = {
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
    # the API an order is paid through, stored: before, only a v3 order's sign type (RSA) told
    5: """
    ALTER TABLE orders ADD COLUMN pay_version text;
    UPDATE orders SET pay_version = CASE WHEN sign_type = 'RSA' THEN 'v3' ELSE 'v2' END;
    ALTER TABLE orders ALTER COLUMN pay_version SET NOT NULL,
        ADD CONSTRAINT orders_pay_version CHECK (pay_version IN ('v2', 'v3'));
    """,
    # reconciliation: a day's report (replaced by a re-run), and the daily run's claim of a day
    6: """
    CREATE TABLE reconciliations (
        bill_date text COLLATE "C" PRIMARY KEY,
        report text NOT NULL,
        unresolved integer NOT NULL,
        created_at double precision NOT NULL
    );
    CREATE TABLE reconciliation_runs (
        bill_date text COLLATE "C" PRIMARY KEY,
        owner text NOT NULL,
        lease_until double precision NOT NULL,
        done_at double precision
    );
    CREATE INDEX orders_time_end ON orders (time_end COLLATE "C");
    """,
    # the notification log: every notification received, its verdict, the bytes WeChat sent
    7: """
    CREATE TABLE notifications (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_at double precision NOT NULL,
        version text NOT NULL,
        kind text NOT NULL,
        verdict text NOT NULL,
        reason text,
        out_trade_no text COLLATE "C",
        out_refund_no text COLLATE "C",
        headers text NOT NULL,
        body bytea NOT NULL,
        body_size integer NOT NULL,
        replay_of bigint
    );
    CREATE INDEX notifications_received ON notifications (received_at, id);
    CREATE INDEX notifications_order ON notifications (out_trade_no, received_at);
    """,
}


async def migrate(pool, target):
    """Bring the schema to `target`. The version is read first: a current schema needs no
    lock and no DDL right (a role that may only read and write can start). Otherwise one
    transaction holding an advisory lock, without the statement and lock timeouts (a
    migration of a large table, or waiting for another process's, may take minutes):
    processes starting together queue on it, the first migrates, the others find it done."""
    async with pool.acquire() as conn:
        if await version_of(conn) == target:
            return
        async with conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
            await conn.execute("SELECT pg_advisory_xact_lock(%d)" % _MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            version = await version_of(conn)
            for step in range(version + 1, target + 1):
                await conn.execute(MIGRATIONS[step], timeout=MIGRATION_TIMEOUT)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", step)
    if version < target:
        log.info("database migrated from schema %d to %d", version, target)


async def version_of(conn):
    """The database's schema version (0: none yet); StoreError when newer than this code."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
    if version > SCHEMA_VERSION:
        raise StoreError("database schema %d is newer than this code (%d)" % (version, SCHEMA_VERSION))
    return version
