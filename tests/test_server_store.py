"""Unit tests for server/store.py: atomic transitions, idempotency keys, durability."""
import asyncio
import sqlite3

import pytest

from server.domain import CLOSED, NOTPAY, SUCCESS, MoveRefused, Order, Refund
from server.store import RefundRefused, StoreError
from server.store.sqlite import SCHEMA_VERSION, SQLiteStore


def order(no="T1", **kw):
    values = dict(out_trade_no=no, openid="o" * 28, product_id="coffee", quantity=1, body="Coffee",
                  total_fee=1200, sign_type="MD5", status=NOTPAY, created_at=1.0, updated_at=1.0)
    values.update(kw)
    return Order(**values)


pytestmark = pytest.mark.gen_test


@pytest.fixture
def store(tmp_path, io_loop):
    s = SQLiteStore(str(tmp_path / "p.db"))
    io_loop.run_sync(s.open)
    yield s
    io_loop.run_sync(s.close)


async def test_insert_and_get(store):
    stored, created = await store.insert_order(order())
    assert created and stored == order()
    assert await store.get_order("T1") == order()
    assert await store.get_order("nope") is None


async def test_idempotency_key_returns_the_first_order(store):
    first, created = await store.insert_order(order("A", idempotency_key="k1"))
    again, created_again = await store.insert_order(order("B", idempotency_key="k1"))
    assert created and not created_again and again.out_trade_no == "A"
    assert await store.get_order("B") is None
    other_user, created_other = await store.insert_order(order("C", openid="p" * 28, idempotency_key="k1"))
    assert created_other and other_user.out_trade_no == "C"


async def test_fifty_racing_transitions_change_once(store):
    await store.insert_order(order())
    results = await asyncio.gather(*[
        store.transition("T1", (NOTPAY,), SUCCESS, "notify", transaction_id="4200%024d" % i, time_end="20261126120000")
        for i in range(50)])
    assert sum(changed for changed, _ in results) == 1
    final = await store.get_order("T1")
    assert final.status == SUCCESS
    winner = next(o for changed, o in results if changed)
    assert final.transaction_id == winner.transaction_id
    assert await store.events("T1") == [(None, NOTPAY, "create"), (NOTPAY, SUCCESS, "notify")]


async def test_paid_order_is_never_closed(store):
    await store.insert_order(order())
    await store.transition("T1", (NOTPAY,), SUCCESS, "notify", transaction_id="4" * 28)
    changed, after = await store.transition("T1", (NOTPAY,), CLOSED, "close")
    assert not changed and after.status == SUCCESS


async def test_set_prepay_only_while_unpaid(store):
    await store.insert_order(order())
    assert await store.set_prepay("T1", "wx1", 100.0)
    await store.transition("T1", (NOTPAY,), CLOSED, "close")
    assert not await store.set_prepay("T1", "wx2", 200.0)
    assert (await store.get_order("T1")).prepay_id == "wx1"


async def test_sessions_expire(store):
    await store.create_session("h", "o" * 28, "sk", expires_at=100.0)
    assert (await store.get_session("h", now=99.0)).openid == "o" * 28
    assert await store.get_session("h", now=100.0) is None
    assert await store.get_session("other", now=1.0) is None


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


async def test_failed_transaction_rolls_back(store):
    await store.insert_order(order())
    with pytest.raises(StoreError):
        await store.insert_order(order())  # same primary key
    assert await store.events("T1") == [(None, NOTPAY, "create")]


def refund(no="R1", fee=500, trade="T1", status="PENDING"):
    return Refund(out_refund_no=no, out_trade_no=trade, refund_fee=fee, reason="", status=status,
                  created_at=1.0, updated_at=1.0)


async def paid(store):
    await store.insert_order(order())
    await store.transition("T1", (NOTPAY,), SUCCESS, "notify", transaction_id="4" * 28)


async def test_refund_only_of_paid_orders(store):
    await store.insert_order(order())
    with pytest.raises(RefundRefused) as info:
        await store.insert_refund(refund(), 50)
    assert info.value.reason == "not_paid"


async def test_refunds_never_exceed_total_and_released_amounts_return(store):
    await paid(store)
    assert (await store.insert_refund(refund("R1", 700), 50))[1]
    with pytest.raises(RefundRefused) as info:
        await store.insert_refund(refund("R2", 501), 50)
    assert info.value.reason == "amount"
    await store.refund_transition("R1", ("PENDING",), "REFUNDCLOSE", "notify")
    assert (await store.insert_refund(refund("R2", 1200), 50))[1]


async def test_refund_count_limit_and_number_conflict(store):
    await paid(store)
    for i in range(3):
        await store.insert_refund(refund("R%d" % i, 1), 3)
    with pytest.raises(RefundRefused) as info:
        await store.insert_refund(refund("R9", 1), 3)
    assert info.value.reason == "count"
    again, created = await store.insert_refund(refund("R0", 1), 3)
    assert not created and again.out_refund_no == "R0"
    with pytest.raises(RefundRefused) as info:
        await store.insert_refund(refund("R0", 2), 3)
    assert info.value.reason == "conflict"


async def test_racing_refund_inserts_respect_the_total(store):
    await paid(store)
    results = await asyncio.gather(*[store.insert_refund(refund("R%d" % i, 500), 50) for i in range(5)],
                                   return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, Exception)) == 2  # 2 x 500 <= 1200 < 3 x 500


async def test_refund_success_moves_order_to_refund_once(store):
    await paid(store)
    await store.insert_refund(refund("R1", 500), 50)
    await store.insert_refund(refund("R2", 500), 50)
    results = await asyncio.gather(*[store.refund_transition("R1", ("PENDING", "PROCESSING"), "SUCCESS", "notify")
                                     for _ in range(10)])
    assert sum(changed for changed, _ in results) == 1
    await store.refund_transition("R2", ("PENDING",), "SUCCESS", "notify")
    assert (await store.get_order("T1")).status == "REFUND"
    assert [e for e in await store.events("T1") if e[1] == "REFUND"] == [("SUCCESS", "REFUND", "refund R1")]
    assert await store.refund_events("R1") == [(None, "PENDING", "create"), ("PENDING", "SUCCESS", "notify")]


async def test_schema_v1_database_migrates_keeping_orders(tmp_path):
    from server.store.sqlite import _MIGRATIONS
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[1].split(";"):
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


async def test_list_refunds_by_status_newest_first_in_pages(store):
    await paid(store)
    for i, status in enumerate(["PENDING", "PROCESSING", "PENDING", "FAILED"]):
        r = refund("R%d" % i, fee=100)
        await store.insert_refund(Refund(**dict(r.__dict__, created_at=10.0 + i)), 50)
        if status != "PENDING":
            await store.refund_transition(r.out_refund_no, ("PENDING",), status, "test")
    assert [r.out_refund_no for r in await store.list_refunds(("PENDING", "PROCESSING"), 10)] == ["R2", "R1", "R0"]
    first = await store.list_refunds(("PENDING",), 1)
    assert [r.out_refund_no for r in first] == ["R2"]
    rest = await store.list_refunds(("PENDING",), 10, (first[-1].created_at, first[-1].out_refund_no))
    assert [r.out_refund_no for r in rest] == ["R0"]
    assert [r.out_refund_no for r in await store.list_refunds(("FAILED",), 10)] == ["R3"]


async def test_only_the_moves_of_the_domain_table(store):
    """The store refuses a move server/domain.py does not allow, and writes nothing."""
    await store.insert_order(order())
    with pytest.raises(MoveRefused):
        await store.transition("T1", (NOTPAY,), "REFUND", "bug")      # unpaid cannot be refunded
    with pytest.raises(MoveRefused):
        await store.insert_order(order("T2", status=SUCCESS))         # an order is born NOTPAY
    assert (await store.get_order("T1")).status == NOTPAY and await store.get_order("T2") is None
    assert await store.events("T1") == [(None, NOTPAY, "create")]
    await store.transition("T1", (NOTPAY,), SUCCESS, "notify", transaction_id="4" * 28)
    with pytest.raises(MoveRefused):
        await store.insert_refund(refund(status="SUCCESS"), 50)       # a refund is born PENDING
    assert await store.refunds_of("T1") == []
