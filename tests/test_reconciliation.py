"""Reconciliation (server/service/reconciliation.py) on SQLite and PostgreSQL: each repair and each
mismatch kind, idempotence, the stored report, a bill not ready, and the daily run's claim of a day
(two services on one database: one run, one repair; not ready: tried again later)."""
import asyncio
import datetime

import pytest

from server.catalog import Catalog
from server.config import Config
from server.domain import NOTPAY, PAYERROR, PENDING, PROCESSING, REFUND, REFUNDCLOSE, SUCCESS
from server.service import Service, ServiceError
from server.service.reconciliation import due_day, parse_day
from server.wechat import bill
from server.wechat.bill import BillNotReady
from tests.support import DEMO
from tests.support.bills import DAY, HEADER, NEXT_MORNING, SUMMARY, Clock, FakeBills, pay, refunded
from tests.support.store import make_store, order, refund

pytestmark = pytest.mark.gen_test

@pytest.fixture(params=["sqlite", "postgres"])
def engine(request):
    return request.param


@pytest.fixture
def where(engine, request, tmp_path):
    return request.getfixturevalue("postgres_url") if engine == "postgres" else str(tmp_path / "p.db")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_service(engine, where, clock, io_loop):
    """`await make_service(bills)`: a Service on this test's database (several share it, as hosts do)."""
    stores = []

    async def make(bills, **config):
        store = make_store(engine, where, clock=clock)
        await store.open()
        stores.append(store)
        values = dict(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"],
                      api_key=DEMO["api_key"], notify_url="http://127.0.0.1:1/wechat/pay/notify",
                      database_url="sqlite:///unused")
        values.update(config)
        return Service(Config(**values), store, bills, Catalog.demo(), clock)
    yield make
    for store in stores:
        io_loop.run_sync(store.close)


async def paid_order(store, no, fee=1200, time_end="20210128101010"):
    await store.insert_order(order(no, total_fee=fee))
    await store.transition(no, (NOTPAY,), SUCCESS, "notify", transaction_id="42" + no, time_end=time_end)


async def refund_in(store, no, trade, fee, status=PROCESSING):
    await store.insert_refund(refund(no, fee=fee, trade=trade), 50)
    if status != PENDING:
        await store.refund_transition(no, (PENDING,), status, "refund")


async def a_day_of_every_kind(store):
    """The store's side of the day the BILL below reports."""
    await paid_order(store, "PAID1")
    await store.insert_order(order("LOST1"))
    await store.insert_order(order("ERR1"))
    await store.transition("ERR1", (NOTPAY,), PAYERROR, "notify")
    await store.insert_order(order("DIFF1"))
    await paid_order(store, "MISS1", time_end="20210128235959")
    await paid_order(store, "OTHERDAY", time_end="20210129000000")
    await paid_order(store, "RF1", 5000, time_end="20210120090000")
    await refund_in(store, "R-PROC", "RF1", 500)
    await refund_in(store, "R-PEND", "RF1", 100, PENDING)
    await refund_in(store, "R-DIFF", "RF1", 300)
    await refund_in(store, "R-CLOSED", "RF1", 200, REFUNDCLOSE)


BILL = [pay("PAID1"), pay("LOST1", at="2021-01-28 23:59:58"), pay("ERR1"), pay("DIFF1", 1500), pay("STRANGER", 990),
        refunded("R-PROC", "RF1", 500), refunded("R-PEND", "RF1", 100, PROCESSING), refunded("R-DIFF", "RF1", 400),
        refunded("R-CLOSED", "RF1", 200), refunded("R-HAND", "RF1", 700)]


async def test_every_repair_and_every_mismatch_kind(make_service):
    service = await make_service(FakeBills(BILL))
    store = service.store
    await a_day_of_every_kind(store)
    lines = []
    report = await service.reconciliation.run(DAY, lines.append)
    assert (report["date"], report["bill_rows"], report["matched"]) == ("2021-01-28", 10, 1)
    assert report["repaired"] == [
        {"out_trade_no": "ERR1", "was": PAYERROR, "now": SUCCESS},
        {"out_trade_no": "LOST1", "was": NOTPAY, "now": SUCCESS},
        {"out_refund_no": "R-PEND", "was": PENDING, "now": PROCESSING},
        {"out_refund_no": "R-PROC", "was": PROCESSING, "now": SUCCESS}]
    kinds = {(m["kind"], m.get("out_refund_no") or m["out_trade_no"]): m for m in report["mismatches"]}
    assert sorted(kinds) == [("amount_differs", "DIFF1"), ("missing_from_bill", "MISS1"),
                             ("refund_amount_differs", "R-DIFF"), ("status_differs", "R-CLOSED"),
                             ("unknown_payment", "STRANGER"), ("unknown_refund", "R-HAND")]
    assert kinds["amount_differs", "DIFF1"]["bill"]["total_fee"] == 1500
    assert kinds["amount_differs", "DIFF1"]["ours"] == {"total_fee": 1200, "status": NOTPAY, "transaction_id": None}
    assert kinds["unknown_payment", "STRANGER"]["ours"] is None
    assert kinds["refund_amount_differs", "R-DIFF"]["bill"]["refund_fee"] == 400
    assert kinds["refund_amount_differs", "R-DIFF"]["ours"]["refund_fee"] == 300
    assert kinds["missing_from_bill", "MISS1"]["bill"] is None
    assert report["unresolved"] == 6 and report["created_at"] == "2021-01-29T10:30:00+08:00"
    lost = await store.get_order("LOST1")
    assert (lost.status, lost.transaction_id, lost.time_end) == (SUCCESS, "42LOST1", "20210128235958")
    assert (await store.events("LOST1"))[-1] == (NOTPAY, SUCCESS, "reconciliation")
    assert (await store.get_order("DIFF1")).status == NOTPAY   # an amount that differs is never believed
    assert (await store.get_order("RF1")).status == REFUND      # its refund's SUCCESS moved it, as notify would
    assert (await store.refund_events("R-PROC"))[-1] == (PROCESSING, SUCCESS, "reconciliation")
    assert lines[0] == "downloading the bill of 2021-01-28" and "6 unresolved" in lines[-1]


async def test_a_second_run_finds_the_repaired_matched_and_the_mismatches_the_same(make_service, clock):
    service = await make_service(FakeBills(BILL))
    await a_day_of_every_kind(service.store)
    first = await service.reconciliation.run(DAY)
    clock.now += 60
    second = await service.reconciliation.run(DAY)
    # every repaired one is matched now (R-PEND is PROCESSING, as the bill has it)
    assert second["repaired"] == [] and second["matched"] == first["matched"] + len(first["repaired"]) == 5
    assert second["mismatches"] == first["mismatches"]
    assert second == await service.reconciliation.stored(DAY)   # the re-run replaced it
    assert (await service.store.events("LOST1")).count((NOTPAY, SUCCESS, "reconciliation")) == 1


async def test_no_stored_report_is_404_and_a_bad_date_400(make_service):
    service = await make_service(FakeBills())
    with pytest.raises(ServiceError) as info:
        await service.reconciliation.stored(DAY)
    assert (info.value.status, info.value.code) == (404, "REPORT_NOT_FOUND")
    for bad in ("2021-02-30", "20210128", "2021-1-28", "", None, "2021-01-28\n"):
        with pytest.raises(ServiceError) as info:
            parse_day(bad)
        assert (info.value.status, info.value.code) == (400, "INVALID_DATE")


async def test_a_bill_not_ready_is_an_error_until_no_bill_can_only_mean_no_trades(make_service, clock):
    creating = BillNotReady("STATEMENT_CREATING", "being made", empty_day=False)
    none = BillNotReady("NO_STATEMENT_EXIST", "no bill", empty_day=True)
    service = await make_service(FakeBills(errors=[creating, none, none]))
    await paid_order(service.store, "MISS1")
    for _ in range(2):
        with pytest.raises(BillNotReady):
            await service.reconciliation.run(DAY)
    clock.now += 2 * 3600   # past noon the next day: WeChat has made every bill it will make
    report = await service.reconciliation.run(DAY)
    assert report["bill_rows"] == 0 and [m["kind"] for m in report["mismatches"]] == ["missing_from_bill"]


def test_the_day_due_is_yesterday_once_the_hour_has_passed_in_beijing():
    assert due_day(NEXT_MORNING, "10:00") == DAY
    assert due_day(NEXT_MORNING, "10:31") == DAY - datetime.timedelta(days=1)
    assert due_day(NEXT_MORNING - 10.5 * 3600, "00:00") == DAY   # 00:00 Beijing is 16:00 UTC the day before


async def test_two_hosts_claiming_the_day_make_one_run_and_one_repair(make_service):
    first, second = FakeBills([pay("LOST1")]), FakeBills([pay("LOST1")])
    one, two = await make_service(first), await make_service(second)
    await one.store.insert_order(order("LOST1"))
    ran = await asyncio.gather(one.reconciliation.daily(), two.reconciliation.daily())
    assert sorted(ran) == [False, True] and len(first.days + second.days) == 1
    assert (await one.store.events("LOST1")).count((NOTPAY, SUCCESS, "reconciliation")) == 1
    assert await one.reconciliation.daily() is False and await two.reconciliation.daily() is False   # done
    assert len(first.days + second.days) == 1


async def test_the_daily_run_tries_again_later_while_the_bill_is_not_ready(make_service, clock):
    bills = FakeBills([pay("LOST1")], errors=[BillNotReady("20002", "No Bill Exist", empty_day=True)])
    service, other = await make_service(bills, reconcile_retry=1800.0), await make_service(FakeBills())
    await service.store.insert_order(order("LOST1"))
    assert await service.reconciliation.daily() is False and len(bills.days) == 1
    clock.now += 1799
    assert await other.reconciliation.daily() is False and other.wechat.days == []   # not before the retry time
    clock.now += 1
    assert await service.reconciliation.daily() is True and len(bills.days) == 2
    assert (await service.store.get_order("LOST1")).status == SUCCESS
    assert (await service.reconciliation.stored(DAY))["repaired"][0]["out_trade_no"] == "LOST1"


async def test_migration_6_adds_the_reports_to_a_schema_5_database(engine, where, clock):
    """A database of the previous release (schema 5) with a paid order: migrated, its order is
    found by the day it was paid and a report is stored."""
    if engine == "postgres":
        from server.store.postgres.store import PostgresStore
        old = PostgresStore(where)
        await old.open(schema_version=5)
    else:
        import sqlite3
        from server.store.sqlite.schema import MIGRATIONS
        conn = sqlite3.connect(where)
        for version in range(1, 6):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute("INSERT INTO orders (out_trade_no, openid, product_id, quantity, body, total_fee, sign_type,"
                     " status, transaction_id, time_end, created_at, updated_at) VALUES ('OLD1', 'o', 'tea', 1, 'Tea',"
                     " 800, 'MD5', 'SUCCESS', '42OLD1', '20210128101010', 1, 1)")
        conn.execute("PRAGMA user_version=5")
        conn.commit()
        conn.close()
    if engine == "postgres":
        await paid_order(old, "OLD1")
        await old.close()
    store = make_store(engine, where, clock=clock)
    await store.open()
    try:
        assert [o.out_trade_no for o in await store.paid_orders_between("20210128000000", "20210128235959")] == ["OLD1"]
        await store.save_reconciliation("2021-01-28", {"date": "2021-01-28", "unresolved": 0}, 0, 1.0)
        assert await store.get_reconciliation("2021-01-28") == {"date": "2021-01-28", "unresolved": 0}
    finally:
        await store.close()


@pytest.mark.parametrize("engine", ["sqlite"])
async def test_the_sweep_starts_the_daily_run_and_goes_on_while_it_downloads(engine, tmp_path, clock):
    from server.app import App
    downloading, release, swept = asyncio.Event(), asyncio.Event(), []

    class SlowBills(FakeBills):
        async def start(self):
            pass

        def close(self):
            pass

        async def download_bill(self, day):
            downloading.set()
            await release.wait()
            return await super().download_bill(day)

    config = Config(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"], api_key=DEMO["api_key"],
                    notify_url="http://127.0.0.1:1/wechat/pay/notify", database_url="sqlite:///%s" % (tmp_path / "p.db"))
    app = App(config, wechat=SlowBills([pay("LOST1")]), clock=clock, sweep_interval=0.01)
    two_sweeps = asyncio.Event()

    async def sweep():
        swept.append(1)
        if len(swept) >= 2 and downloading.is_set():
            two_sweeps.set()
    app.service.sweep = sweep
    await app.start()
    try:
        await app.store.insert_order(order("LOST1"))
        await downloading.wait()
        await two_sweeps.wait()   # the sweep goes on while the bill downloads
        release.set()
        await app._daily
        assert (await app.store.get_order("LOST1")).status == SUCCESS
        assert (await app.service.reconciliation.stored(DAY))["repaired"][0]["out_trade_no"] == "LOST1"
    finally:
        await app.stop()


async def test_a_v2_bill_moves_nothing_that_orderquery_or_refundquery_does_not_confirm(make_service):
    # v2's bill is an unsigned file (only TLS vouches for it); orderquery's and refundquery's
    # answers are signed: WeChat's signed word says LOST1 unpaid and R-PROC still processing
    service = await make_service(FakeBills([pay("LOST1"), refunded("R-PROC", "RF1", 500)], answers={
        "LOST1": {"trade_state": NOTPAY}, "R-PROC": [{"out_refund_no": "R-PROC", "refund_fee": 500,
                                                     "refund_status": PROCESSING, "refund_id": "50R-PROC"}]}))
    await service.store.insert_order(order("LOST1"))
    await paid_order(service.store, "RF1", 5000, time_end="20210120090000")
    await refund_in(service.store, "R-PROC", "RF1", 500)
    report = await service.reconciliation.run(DAY)
    assert (await service.store.get_order("LOST1")).status == NOTPAY
    assert (await service.store.get_refund("R-PROC")).status == PROCESSING
    assert report["repaired"] == []
    assert sorted((m["kind"], m.get("out_refund_no") or m["out_trade_no"]) for m in report["mismatches"]) == [
        ("status_differs", "LOST1"), ("status_differs", "R-PROC")]


def bill_row(no, appid=DEMO["appid"], mch_id=DEMO["mch_id"], fee="12.00"):
    return ("`2021-01-28 10:10:10,`%s,`%s,`0,`,`42%s,`%s,`%s,`JSAPI,`SUCCESS,`OTHERS,`CNY,`%s,`0.00,`0,`0,`0.00,"
            "`0.00,`,`,`Coffee,`,`0.00000,`0.60%%,`%s,`0.00,`" % (appid, mch_id, no, no, "o" * 28, fee, fee))


@pytest.mark.parametrize("appid, mch_id", [("wx0000000000000000", DEMO["mch_id"]), (DEMO["appid"], "1999999999")])
async def test_a_payment_row_of_another_appid_or_mch_id_repairs_nothing(make_service, appid, mch_id):
    rows = bill.parse("\r\n".join([HEADER, bill_row("LOST1", appid, mch_id), SUMMARY, "`1,`12.00"]))
    service = await make_service(FakeBills(rows))
    await service.store.insert_order(order("LOST1"))
    report = await service.reconciliation.run(DAY)
    assert (await service.store.get_order("LOST1")).status == NOTPAY
    assert [(m["kind"], m["out_trade_no"]) for m in report["mismatches"]] == [("unknown_payment", "LOST1")]
    assert (report["mismatches"][0]["bill"]["appid"], report["mismatches"][0]["bill"]["mch_id"]) == (appid, mch_id)


async def test_a_refund_row_with_another_refund_id_than_ours_moves_nothing(make_service):
    # WeChat numbers each refund once: a row of our out_refund_no under another refund_id is not ours
    service = await make_service(FakeBills([refunded("R-PROC", "RF1", 500)]), pay_version="v3")
    await paid_order(service.store, "RF1", 5000, time_end="20210120090000")
    await service.store.insert_refund(refund("R-PROC", fee=500, trade="RF1"), 50)
    await service.store.refund_transition("R-PROC", (PENDING,), PROCESSING, "refund", refund_id="5030STORED")
    report = await service.reconciliation.run(DAY)
    stored = await service.store.get_refund("R-PROC")
    assert (stored.status, stored.refund_id) == (PROCESSING, "5030STORED")
    assert [(m["kind"], m["out_refund_no"]) for m in report["mismatches"]] == [("refund_id_differs", "R-PROC")]


async def test_the_admin_run_and_the_daily_run_at_once_repair_and_count_once(make_service):
    bills = [pay("LOST1"), refunded("R-PROC", "RF1", 500)]
    one, two = await make_service(FakeBills(bills)), await make_service(FakeBills(bills))
    await one.store.insert_order(order("LOST1"))
    await paid_order(one.store, "RF1", 5000, time_end="20210120090000")
    await refund_in(one.store, "R-PROC", "RF1", 500)
    reports = await asyncio.gather(one.reconciliation.run(DAY), two.reconciliation.daily())
    assert reports[1] is True
    stored = await one.reconciliation.stored(DAY)
    assert stored["unresolved"] == 0 and stored["matched"] + len(stored["repaired"]) == 2
    assert (await one.store.events("LOST1")).count((NOTPAY, SUCCESS, "reconciliation")) == 1
    assert (await one.store.refund_events("R-PROC")).count((PROCESSING, SUCCESS, "reconciliation")) == 1
    assert [e for e in await one.store.events("RF1") if e[1] == REFUND] == [(SUCCESS, REFUND, "refund R-PROC")]


async def test_a_refund_settled_after_the_days_end_is_matched_not_a_mismatch(make_service):
    # WeChat's bill shows a refund as it was at the end of the day it was asked for: one that
    # succeeded after midnight is PROCESSING there, while we (rightly) have it as SUCCESS
    service = await make_service(FakeBills([refunded("R-LATE", "RF1", 500, PROCESSING)]))
    await paid_order(service.store, "RF1", 5000, time_end="20210120090000")
    await refund_in(service.store, "R-LATE", "RF1", 500, SUCCESS)
    report = await service.reconciliation.run(DAY)
    assert (report["matched"], report["repaired"], report["mismatches"]) == (1, [], [])
    assert (await service.store.get_refund("R-LATE")).status == SUCCESS


def counted():
    """This process's payments by how and refunds by outcome (server/metrics.py)."""
    from server import metrics
    found = {}
    for family in metrics.setup().prom.REGISTRY.collect():
        for s in family.samples:
            if s.name in ("wxpay_payments_recorded_total", "wxpay_refunds_total"):
                found[(s.name, tuple(s.labels.values()))] = s.value
    return found


async def test_a_runs_repairs_are_counted_once_as_payments_and_refunds_by_reconciliation(make_service, clock):
    service = await make_service(FakeBills(BILL))
    await a_day_of_every_kind(service.store)
    before = counted()
    await service.reconciliation.run(DAY)
    clock.now += 60
    await service.reconciliation.run(DAY)   # matched now: nothing counted again
    after = counted()
    moved = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert moved == {("wxpay_payments_recorded_total", ("reconciliation",)): 2,   # ERR1, LOST1
                     ("wxpay_refunds_total", ("accepted",)): 1,                   # R-PEND: PROCESSING
                     ("wxpay_refunds_total", ("success",)): 1}                    # R-PROC
