"""The SQLite engine's own guarantees (the shared contract suite is test_server_store.py):
WAL and durability, its schema versions, group commit failures, openers racing on a file."""
import asyncio
import sqlite3

import pytest

from server.domain import NOTPAY, SUCCESS
from server.store import StoreError
from server.store.sqlite.schema import SCHEMA_VERSION
from server.store.sqlite.store import SQLiteStore
from tests.support.store import order, refund

pytestmark = pytest.mark.gen_test


@pytest.fixture
def store(tmp_path, io_loop):
    s = SQLiteStore(str(tmp_path / "p.db"))
    io_loop.run_sync(s.open)
    yield s
    io_loop.run_sync(s.close)


async def test_durable_across_reopen_and_wal(tmp_path):
    path = str(tmp_path / "p.db")
    s = SQLiteStore(path)
    await s.open()
    await s.insert_order(order())
    await s.transition("T1", (NOTPAY,), SUCCESS, "notify", transaction_id="4" * 28)
    await s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    s2 = SQLiteStore(path)
    await s2.open()
    assert (await s2.get_order("T1")).status == SUCCESS
    await s2.close()


async def test_newer_schema_refused(tmp_path):
    path = str(tmp_path / "p.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=%d" % (SCHEMA_VERSION + 1))
    conn.close()
    s = SQLiteStore(path)
    with pytest.raises(StoreError):
        await s.open()


async def test_schema_v1_database_migrates_keeping_orders(tmp_path):
    from server.store.sqlite.schema import MIGRATIONS
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[1].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO orders (out_trade_no, openid, product_id, quantity, body, total_fee, sign_type,"
                 " status, created_at, updated_at) VALUES ('OLD', 'o', 'tea', 1, 'Tea', 800, 'MD5', 'SUCCESS', 1, 1)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    await s.open()
    assert (await s.get_order("OLD")).status == SUCCESS
    assert (await s.insert_refund(refund("R1", 800, "OLD"), 50))[1]
    await s.close()


async def test_migration_5_gives_each_order_the_pay_version_its_sign_type_told(tmp_path):
    from server.store.sqlite.schema import MIGRATIONS
    path = str(tmp_path / "v4.db")
    conn = sqlite3.connect(path)
    for version in range(1, 5):
        for statement in MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
    signed = {"MD5-ORDER": "MD5", "HMAC-ORDER": "HMAC-SHA256", "RSA-ORDER": "RSA"}
    for no, sign_type in signed.items():
        conn.execute("INSERT INTO orders (out_trade_no, openid, product_id, quantity, body, total_fee, sign_type,"
                     " status, created_at, updated_at) VALUES (?, 'o', 'tea', 1, 'Tea', 800, ?, 'SUCCESS', 1, 1)",
                     (no, sign_type))
    conn.execute("PRAGMA user_version=4")
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    await s.open()
    assert {no: (await s.get_order(no)).pay_version for no in signed} == {
        "MD5-ORDER": "v2", "HMAC-ORDER": "v2", "RSA-ORDER": "v3"}
    await s.close()
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):   # NOT NULL
        conn.execute("UPDATE orders SET pay_version = NULL WHERE out_trade_no = 'MD5-ORDER'")
    with pytest.raises(sqlite3.IntegrityError):   # v2 or v3 only
        conn.execute("UPDATE orders SET pay_version = 'v4' WHERE out_trade_no = 'MD5-ORDER'")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
    conn.close()


async def test_a_job_that_aborts_the_batch_fails_alone(store):
    """Disk full in one job aborts SQLite's whole transaction: the others are redone, and
    every caller hears the truth about its own job."""
    pages = await store._run(lambda: store._conn.execute("PRAGMA page_count").fetchone()[0])
    await store._run(lambda: store._conn.execute("PRAGMA max_page_count = %d" % (pages + 8)))
    results = await asyncio.gather(
        store.insert_order(order("T1")), store.insert_order(order("BIG", body="x" * 200000)),
        store.insert_order(order("T3")), store.insert_order(order("T4")), return_exceptions=True)
    assert [isinstance(r, StoreError) for r in results] == [False, True, False, False]
    for no in ("T1", "T3", "T4"):
        assert await store.get_order(no) is not None
    assert await store.get_order("BIG") is None
    assert await store.ping()


async def test_the_database_thread_survives_a_failing_commit_and_rollback(store):
    class Broken:
        """The real connection, except that COMMIT and then ROLLBACK fail once each."""
        def __init__(self, conn):
            self.conn, self.fail = conn, ["COMMIT", "ROLLBACK"]

        def execute(self, sql, *args):
            if self.fail and sql == self.fail[0]:
                self.fail.pop(0)
                raise sqlite3.OperationalError("disk I/O error")
            return self.conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.conn, name)
    broken = store._conn = Broken(store._conn)
    with pytest.raises(StoreError):
        await store.insert_order(order("T1"))
    assert await store.ping()  # answered, not hung: the store reopened the database
    assert store._conn is not broken
    assert await store.get_order("T1") is None
    assert (await store.insert_order(order("T2")))[1]


def test_processes_opening_one_fresh_file_together_migrate_it_once(tmp_path):
    """Each opener reads the schema version and migrates inside one write transaction: four
    opening a new file at once (a thread each, as processes would) never collide. Before,
    every round failed with 'table sessions already exists' or 'database is locked'."""
    import threading
    for round_no in range(25):
        path = str(tmp_path / ("r%d.db" % round_no))
        barrier, errors = threading.Barrier(4), []

        def open_it():
            store = SQLiteStore(path)
            barrier.wait()
            try:
                store._open()   # what open() runs on the database thread
                store._conn.close()
            except Exception as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], "round %d: %s" % (round_no, errors)
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()


async def test_open_failure_names_the_file(tmp_path):
    (tmp_path / "a-file").write_text("x")
    s = SQLiteStore(str(tmp_path / "a-file" / "p.db"))
    with pytest.raises(StoreError) as info:
        await s.open()
    assert str(info.value) == "cannot open the database %s: cannot create its folder %s: File exists" % (
        tmp_path / "a-file" / "p.db", tmp_path / "a-file")
