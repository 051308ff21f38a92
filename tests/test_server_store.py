"""The Store contract (server/store/__init__.py), one suite run against both engines:
SQLite and PostgreSQL. Engine-specific tests: test_server_store_sqlite.py, _postgres.py."""
import asyncio

import pytest

from server.domain import CLOSED, NOTPAY, PAYERROR, SUCCESS, MoveRefused, Refund
from server.store import RefundRefused, StoreError
from tests.support.store import make_store, order, paid, refund

pytestmark = pytest.mark.gen_test


@pytest.fixture
def opened(engine, where, io_loop):
    """`await opened(**kwargs)` -> an opened store on this test's database (several may share
    it, as processes do); all closed at the end."""
    stores = []

    async def open_store(**kwargs):
        s = make_store(engine, where, **kwargs)
        await s.open()
        stores.append(s)
        return s
    yield open_store
    for s in stores:
        io_loop.run_sync(s.close)


@pytest.fixture
def store(opened, io_loop):
    return io_loop.run_sync(opened)


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


async def test_failed_transaction_rolls_back(store):
    await store.insert_order(order())
    with pytest.raises(StoreError):
        await store.insert_order(order())  # same primary key
    assert await store.events("T1") == [(None, NOTPAY, "create")]


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


async def test_refund_idempotency_key_returns_the_first_refund(store):
    """Found by its key before any check: the same refund even once nothing is left to refund."""
    await paid(store)
    await paid(store, "T2")
    first, created = await store.insert_refund(refund("R1", 1200, idempotency_key="k1"), 50)
    assert created and first.idempotency_key == "k1"
    for again in (refund("R2", 1200, idempotency_key="k1"), refund("R3", 5, "T2", idempotency_key="k1")):
        stored, created = await store.insert_refund(again, 50)
        assert not created and stored == first
    assert [r.out_refund_no for r in await store.refunds_of("T1")] == ["R1"] and await store.refunds_of("T2") == []
    assert (await store.insert_refund(refund("R4", 1, "T2", idempotency_key="k2"), 50))[1]
    assert (await store.get_refund("R4")).idempotency_key == "k2"


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



# -- races between processes: two stores on one database, as two processes would have ---------

async def test_racing_orders_with_one_idempotency_key_get_one_order(opened):
    """Looked up, then inserted, two requests with one key would collide (one error); the
    contract says every caller gets the one order."""
    a, b = await opened(), await opened()
    results = await asyncio.gather(*[(a, b)[i % 2].insert_order(order("A%02d" % i, idempotency_key="k1"))
                                     for i in range(20)], return_exceptions=True)
    assert [r for r in results if isinstance(r, Exception)] == []
    assert sum(created for _, created in results) == 1
    assert len({o.out_trade_no for o, _ in results}) == 1
    winner = results[[created for _, created in results].index(True)][0]
    assert await a.events(winner.out_trade_no) == [(None, NOTPAY, "create")]


async def test_racing_refunds_with_one_idempotency_key_get_one_refund(opened):
    """Twenty requests with one key, from two processes, for one order or for two: every caller
    gets the one refund (none an error), and only it is stored."""
    a, b = await opened(), await opened()
    await paid(a, "T1")
    await paid(a, "T2")
    results = await asyncio.gather(*[(a, b)[i % 2].insert_refund(
        refund("R%02d" % i, 100, ("T1", "T2")[i % 4 // 2], idempotency_key="k1"), 50) for i in range(20)],
        return_exceptions=True)
    assert [r for r in results if isinstance(r, Exception)] == []
    assert sum(created for _, created in results) == 1
    assert len({r for r, _ in results}) == 1
    winner = results[0][0]
    assert len(await a.refunds_of("T1") + await a.refunds_of("T2")) == 1
    assert await a.refund_events(winner.out_refund_no) == [(None, "PENDING", "create")]


async def test_audit_rows_name_the_state_really_left(opened):
    """NOTPAY -> PAYERROR racing (NOTPAY | PAYERROR) -> SUCCESS: whichever wins, the audit
    trail is one chain (each row leaves the state the previous one entered). A move that
    read the status before a concurrent change would write NOTPAY -> SUCCESS after PAYERROR."""
    a, b = await opened(), await opened()
    for i in range(30):
        no = "C%02d" % i
        await a.insert_order(order(no))
        await asyncio.gather(
            a.transition(no, (NOTPAY,), PAYERROR, "pay failed"),
            b.transition(no, (NOTPAY, PAYERROR), SUCCESS, "notify", transaction_id="4" * 28),
            a.transition(no, (NOTPAY,), PAYERROR, "pay failed"))
        trail = await a.events(no)
        assert all(prev[1] == row[0] for prev, row in zip(trail, trail[1:])), trail
        assert trail[-1][1] == SUCCESS and (await a.get_order(no)).status == SUCCESS


async def test_refunds_from_two_processes_never_exceed_the_total(opened):
    a, b = await opened(), await opened()
    await paid(a)
    results = await asyncio.gather(*[(a, b)[i % 2].insert_refund(refund("R%d" % i, 300), 50) for i in range(12)],
                                   return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, Exception)) == 4      # 4 x 300 = 1200
    assert {r.reason for r in results if isinstance(r, Exception)} == {"amount"}
    assert sum(r.refund_fee for r in await a.refunds_of("T1")) == 1200


async def test_each_due_row_is_claimed_once_per_round(opened):
    """Two sweeps at once (two processes or hosts) split the due orders and refunds between
    them: none is handed to both, none is left out."""
    a, b = await opened(), await opened()
    for i in range(24):
        no = "D%02d" % i
        await a.insert_order(order(no, created_at=1000.0 + i))
        await a.set_prepay(no, "wx%02d" % i, 9999.0)
    await paid(a, "P1")
    for i in range(6):
        await a.insert_refund(refund("R%d" % i, 100, "P1", created_at=1000.0 + i), 50)
    now = 2000.0
    claims = await asyncio.gather(*[(a, b)[i % 2].claim_due(now, 60, 3600, 5) for i in range(8)])
    orders = [o.out_trade_no for got, _ in claims for o in got]
    refunds = [r.out_refund_no for _, got in claims for r in got]
    assert sorted(orders) == ["D%02d" % i for i in range(24)]
    assert sorted(refunds) == ["R%d" % i for i in range(6)]
    assert all(o.checked_at == now for got, _ in claims for o in got)
    assert await a.claim_due(now + 1, 60, 3600, 50) == ([], [])          # claimed: not due again yet
    again, _ = await b.claim_due(now + 400, 60, 3600, 50)                # a quarter of their age later
    assert len(again) == 24


# -- the notification log ----------------------------------------------------------------------
def a_note(at=5.0, verdict="accepted", **kw):
    from server.domain import LoggedNotification
    return LoggedNotification(received_at=at, version="v3", kind="payment", verdict=verdict, body=b"\x00{}\xff",
                              body_size=4, headers=(("Wechatpay-Nonce", "N1"),), out_trade_no="T1", **kw)


async def test_a_transition_keeps_its_note_only_when_it_moves(store):
    await store.insert_order(order("T1"))
    assert (await store.transition("T1", (NOTPAY,), SUCCESS, "notify", a_note(), transaction_id="4" * 28))[0]
    assert not (await store.transition("T1", (NOTPAY,), SUCCESS, "notify", a_note(6.0), transaction_id="4" * 28))[0]
    [kept] = await store.list_notifications(10)
    assert kept == a_note(id=kept.id) and await store.get_notification(kept.id) == kept
    await store.insert_refund(refund("R1", trade="T1"), 50)
    assert (await store.refund_transition("R1", ("PENDING",), SUCCESS, "notify", a_note(7.0)))[0]
    assert [n.received_at for n in await store.list_notifications(10)] == [7.0, 5.0]


async def test_the_log_pages_filters_and_prunes(store):
    ids = [await store.log_notification(a_note(at, verdict)) for at, verdict in
           ((1.0, "refused"), (2.0, "accepted"), (2.0, "refused"), (3.0, "duplicate"))]
    newest = await store.list_notifications(2)
    assert [n.id for n in newest] == [ids[3], ids[2]]
    assert [n.id for n in await store.list_notifications(5, (2.0, ids[2]))] == [ids[1], ids[0]]
    assert [n.id for n in await store.list_notifications(5, verdict="refused")] == [ids[2], ids[0]]
    assert await store.list_notifications(5, out_trade_no="T2") == []
    assert await store.get_notification(10 ** 15) is None
    assert await store.prune_notifications(2.0) == 1
    assert [n.id for n in await store.list_notifications(5)] == [ids[3], ids[2], ids[1]]
