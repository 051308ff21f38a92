"""The SQLite schema: each migration's SQL, and the step that brings a file to SCHEMA_VERSION."""
import logging

from server.store import StoreError

log = logging.getLogger("server.store")

SCHEMA_VERSION = 7
MIGRATIONS = {
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
    # the API an order is paid through, stored: before, only a v3 order's sign type (RSA) told
    5: """
    ALTER TABLE orders ADD COLUMN pay_version TEXT NOT NULL DEFAULT 'v2' CHECK (pay_version IN ('v2', 'v3'));
    UPDATE orders SET pay_version = 'v3' WHERE sign_type = 'RSA';
    """,
    # reconciliation: a day's report (replaced by a re-run), and the daily run's claim of a day
    6: """
    CREATE TABLE reconciliations (
        bill_date TEXT PRIMARY KEY,
        report TEXT NOT NULL,
        unresolved INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE reconciliation_runs (
        bill_date TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        lease_until REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX orders_time_end ON orders (time_end);
    """,
    # the notification log: every notification received, its verdict, the bytes WeChat sent
    7: """
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at REAL NOT NULL,
        version TEXT NOT NULL,
        kind TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT,
        out_trade_no TEXT,
        out_refund_no TEXT,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        body_size INTEGER NOT NULL,
        replay_of INTEGER
    );
    CREATE INDEX notifications_received ON notifications (received_at, id);
    CREATE INDEX notifications_order ON notifications (out_trade_no, received_at);
    """,
}


def migrate(conn):
    """Bring the schema to SCHEMA_VERSION. The version is read and every step applied in
    one write transaction (BEGIN IMMEDIATE takes the write lock first), so processes
    starting together on one file migrate it once: the others wait, then find it done."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError("database schema %d is newer than this code (%d)" % (version, SCHEMA_VERSION))
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # statement by statement: executescript() would commit behind our back
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("PRAGMA user_version=%d" % target)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if version < SCHEMA_VERSION:
        log.info("database migrated from schema %d to %d", version, SCHEMA_VERSION)
