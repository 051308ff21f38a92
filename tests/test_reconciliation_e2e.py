"""Reconciliation end to end: real processes, a day reconciled by the CLI, the admin API and the daily run."""
# A Beijing day on the simulator's clock: two orders paid, one unpaid, one paid and refunded
# through the backend, one whose notifications are all lost, a stranger's payment (placed at
# WeChat with the merchant's key, unknown to the shop) and a refund made by hand in the
# merchant platform; the day ends on the simulator's clock and is reconciled: v3 on SQLite by
# the admin API and the CLI, v2 on SQLite by the CLI (twice) and the admin API, and v2 on
# PostgreSQL by the daily run of two hosts at once. Each is a day of its own, so that a bill
# lists one backend's trades only (both versions are the same merchant).
import asyncio
import datetime
import json
import os
import subprocess
import sys
import time

import asyncpg
import pytest
import requests

from tests.support import ADMIN_TOKEN, DEMO
from tests.support.processes import ROOT, Proc, free_port
from tests.support.shop import ADMIN, TLSShop, backend_env
from tests.support.sim import order_fields, pay_params, protocol, signed_xml

pytestmark = pytest.mark.e2e

BEIJING = datetime.timezone(datetime.timedelta(hours=8))
# run_server.py with its time.time moved (tests/support/shifted_clock/sitecustomize.py) to the
# simulator's clock, which only moves forward and is days ahead: v3 orders' time_expire is
# the backend's time, and the daily run reconciles the backend's yesterday
SHIFTED_CLOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "shifted_clock")


class Books(TLSShop):
    """The simulator of the module; day(version, database_url) -> a Shop of one backend on it."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.v3_dir = tmp_path / "sim-v3"

    def start(self):
        port = free_port()
        self.sim = Proc("run_simulator.py", ["--port", str(port), "--tls", "--tls-dir", str(self.tls),
                                             "--v3-dir", str(self.v3_dir), "--time-scale", "0.01"], port=port)
        self.sim.url = "https://127.0.0.1:%d" % port
        return self

    def stop(self):
        self.sim.stop()

    def environment(self, version, port, **settings):
        """run_server.py's settings on this simulator (no sweep unless asked: it would repair by orderquery)."""
        env = backend_env(self.sim.url, port, "MD5")
        env.update(WECHAT_CA_FILE=self.ca, WECHAT_CERT_FILE=str(self.tls / "merchant.pem"),
                   WECHAT_KEY_FILE=str(self.tls / "merchant-key.pem"), ADMIN_TOKEN=ADMIN_TOKEN, SWEEP_INTERVAL="0")
        if version == "v3":
            with open(self.v3_dir / "v3.json", encoding="utf-8") as f:
                m = json.load(f)
            env.update(WECHAT_PAY_VERSION="v3", WECHAT_MCH_ID=m["mchid"], WECHAT_APIV3_KEY=m["apiv3_key"],
                       WECHAT_MCH_PRIVATE_KEY_FILE=m["merchant_private_key_file"],
                       WECHAT_MCH_SERIAL_NO=m["merchant_serial_no"],
                       WECHAT_PAY_PUBLIC_KEY_FILE=m["wechatpay_public_key_file"],
                       WECHAT_PAY_PUBLIC_KEY_ID=m["wechatpay_public_key_id"],
                       WECHAT_NOTIFY_URL="http://127.0.0.1:%d/wechat/pay/v3/notify" % port)
        env.update(settings)
        return env

    def day(self, version, database_url, wait=True, **settings):
        """A backend whose clock is the simulator's: its daily run reconciles its yesterday. (A v3
        backend keeps real time: the simulator signs its answers with real time, which a v3 client
        checks, and checks a v3 order's time_expire, the backend's time, with its own clock; so v3
        trades while the simulator's clock is real time.)"""
        if version == "v2":
            settings.update(WXPAY_TEST_CLOCK_SHIFT=repr(self.clock()["offset"]),
                            PYTHONPATH=os.pathsep.join(filter(None, [SHIFTED_CLOCK, os.environ.get("PYTHONPATH")])))
        shop = TLSShop(self.tls.parent)
        shop.sim, shop.database_url = self.sim, database_url
        shop.db = database_url[len("sqlite:///"):]      # events() reads it on SQLite
        port = free_port()
        shop.env = self.environment(version, port, **settings)
        shop.backend = Proc("run_server.py", ["--port", str(port), "--database-url", database_url],
                            env=shop.env, port=port, wait_port=wait)
        return shop

    def clock(self, advance=None):
        if advance is None:
            return self.simulator("GET", "/sim/clock").json()
        return self.simulator("POST", "/sim/clock", json={"advance": advance}).json()

    def today(self):
        """The simulator's Beijing day while its clock is real time, with a minute of it left at least."""
        assert self.clock()["offset"] == 0
        now = datetime.datetime.now(BEIJING)
        left = 86400 - (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        if left < 60:
            time.sleep(left + 1)     # a day's trades must not straddle midnight; nothing to await
        return datetime.datetime.now(BEIJING).date()

    def next_day(self):
        """The simulator's clock moved to 01:00 of its next Beijing day; that day."""
        now = self.clock()["now"]
        day = datetime.datetime.fromtimestamp(now, BEIJING).date() + datetime.timedelta(days=1)
        self.clock(datetime.datetime.combine(day, datetime.time(1), BEIJING).timestamp() - now)
        return day

    def end(self, day):
        """The simulator's clock moved just past the day's end: its bill exists."""
        end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), BEIJING).timestamp()
        self.clock(end + 1 - self.clock()["now"])


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    b = Books(tmp_path_factory.mktemp("reconcile")).start()
    yield b
    b.stop()


def paid(shop, auth, product):
    order = shop.create(auth, {"product_id": product})
    answer = shop.pay(order["payment"])
    assert answer.status_code == 200, answer.text
    shop.wait_status(auth, order["out_trade_no"], "SUCCESS")
    return order["out_trade_no"]


def stranger(shop, out_trade_no):
    """An order placed at WeChat with the merchant's key by someone else, paid: its transaction_id."""
    login = shop.simulator("POST", "/sim/login", json={"appid": DEMO["appid"], "user": "stranger"}).json()
    fields = order_fields(login["openid"], out_trade_no, total_fee="500", notify_url="http://127.0.0.1:9/notify")
    answer = protocol.parse_xml(shop.simulator("POST", "/pay/unifiedorder", data=signed_xml(fields)).content)
    assert answer["result_code"] == "SUCCESS", answer
    paid_answer = shop.pay(pay_params(answer["prepay_id"]))
    assert paid_answer.status_code == 200, paid_answer.text
    return paid_answer.json()["transaction_id"]


def trade(shop, tag):
    """The day's trades, through the backend and at WeChat; their numbers."""
    auth = shop.login()
    t = {"coffee": paid(shop, auth, "coffee"), "tea": paid(shop, auth, "tea"),
         "unpaid": shop.create(auth, {"product_id": "cake"})["out_trade_no"], "cake": paid(shop, auth, "cake")}
    refund = shop.refund(t["cake"], {"refund_fee": 600})
    assert refund.status_code == 202, refund.text
    shop.wait_refund(t["cake"], refund.json()["out_refund_no"], "SUCCESS")
    lost = shop.create(auth, {"product_id": "coffee"})
    t["lost"] = lost["out_trade_no"]
    assert shop.simulator("POST", "/sim/orders/%s/notifications" % t["lost"], json={"deliver": False}).ok
    assert shop.pay(lost["payment"]).status_code == 200
    t["stranger"] = "STRANGER-" + tag
    t["stranger_tid"] = stranger(shop, t["stranger"])
    t["by_hand"] = shop.simulator("POST", "/sim/orders/%s/refunds" % t["coffee"], json={"refund_fee": 300}).json()
    assert shop.order(auth, t["lost"]).json()["status"] == "NOTPAY"
    return t


def expected(day, t, first):
    """The report of the day: the lost payment repaired by the first run, matched by the next."""
    return {"date": day.isoformat(), "bill_rows": 7, "matched": 4 if first else 5,
            "repaired": [{"out_trade_no": t["lost"], "was": "NOTPAY", "now": "SUCCESS"}] if first else [],
            "mismatches": [
                {"kind": "unknown_payment", "out_trade_no": t["stranger"],
                 "bill": {"total_fee": 500, "transaction_id": t["stranger_tid"]}, "ours": None},
                {"kind": "unknown_refund", "out_trade_no": t["coffee"], "out_refund_no": t["by_hand"]["out_refund_no"],
                 "bill": {"refund_fee": 300, "refund_status": "SUCCESS", "refund_id": t["by_hand"]["refund_id"]},
                 "ours": None}],
            "unresolved": 2}


def without_time(report):
    assert isinstance(report.pop("created_at"), str)
    return report


def cli(shop, day):
    """run_server.py reconcile --date DAY --json with the backend's settings: (exit code, report)."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "run_server.py"), "reconcile", "--date", day.isoformat(),
                           "--json", "--database-url", shop.database_url], env=dict(os.environ, **shop.env),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    return done.returncode, without_time(json.loads(done.stdout)) if done.stdout else done.stderr


def admin_post(shop, day):
    r = requests.post(shop.backend.url + "/admin/reconciliations", json={"date": day.isoformat()}, headers=ADMIN,
                      timeout=30)
    assert r.status_code == 200, r.text
    return without_time(r.json())


def admin_get(shop, day):
    r = requests.get(shop.backend.url + "/admin/reconciliations/" + day.isoformat(), headers=ADMIN, timeout=10)
    return r.status_code, r.json()


def a_day(books, version, database_url, tag):
    day = books.today() if version == "v3" else books.next_day()
    shop = books.day(version, database_url)
    t = trade(shop, tag)
    books.end(day)
    return shop, day, t


@pytest.fixture(scope="module")
def v3_day(books, tmp_path_factory):
    """The v3 day, traded first: while the simulator's clock is real time (Books.day says why)."""
    shop, day, t = a_day(books, "v3", "sqlite:///%s" % (tmp_path_factory.mktemp("v3") / "v3.db"), "V3")
    yield shop, day, t
    shop.backend.stop()


def test_v3_on_sqlite_by_the_admin_api_then_the_cli(v3_day):
    shop, day, t = v3_day
    assert admin_post(shop, day) == expected(day, t, first=True)
    status, stored = admin_get(shop, day)
    assert status == 200 and without_time(stored) == expected(day, t, first=True)
    assert cli(shop, day) == (1, expected(day, t, first=False))
    assert shop.events(t["lost"]) == [(None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "reconciliation")]


def test_v2_on_sqlite_by_the_cli_twice_then_the_admin_api(books, v3_day, tmp_path):
    """(v3_day: its day is traded before this one moves the simulator's clock.)"""
    shop, day, t = a_day(books, "v2", "sqlite:///%s" % (tmp_path / "v2.db"), "V2")
    try:
        assert cli(shop, day) == (1, expected(day, t, first=True))
        assert cli(shop, day) == (1, expected(day, t, first=False))
        assert shop.events(t["lost"]) == [(None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "reconciliation")]
        assert admin_post(shop, day) == expected(day, t, first=False)
        status, stored = admin_get(shop, day)
        assert status == 200 and without_time(stored) == expected(day, t, first=False)
    finally:
        shop.backend.stop()


def test_postgres_two_hosts_run_the_daily_reconciliation_once(books, v3_day, postgres_server):
    """The day traded through one host, then two hosts started with the day due at once: one
    of them reconciles it, one report stored, the lost payment repaired once."""
    url = postgres_server.create_schema("reconcile_e2e")
    setup, day, t = a_day(books, "v2", url, "PG")
    setup.backend.stop()
    hosts = [books.day("v2", url, wait=False, SWEEP_INTERVAL="0.2", RECONCILE_AT="00:00") for _ in range(2)]
    try:
        for host in hosts:      # started together: both find the day due at their first sweeps
            host.backend.wait_port()
        ran = wait_for(lambda: [h for h in hosts if "daily reconciliation of %s:" % day in h.backend.output()])
        status, stored = admin_get(hosts[1], day)
        assert status == 200 and without_time(stored) == expected(day, t, first=True)
        assert query(url, "SELECT bill_date FROM reconciliations") == [(day.isoformat(),)]
        lost = query(url, "SELECT from_status, to_status, source FROM order_events WHERE out_trade_no = $1"
                          " ORDER BY id", t["lost"])
        assert lost == [(None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "reconciliation")]
        assert len(ran) == 1 and ran[0].backend.output().count("daily reconciliation of %s:" % day) == 1
        [(owner, done)] = query(url, "SELECT owner, done_at FROM reconciliation_runs WHERE bill_date = $1",
                                day.isoformat())
        assert owner.split(":")[1] == str(ran[0].backend.proc.pid) and done is not None
        assert "7 rows, 4 matched, 1 repaired, 2 unresolved" in ran[0].backend.output()
    finally:
        for host in hosts:
            host.backend.stop()
    assert not [h for h in hosts if h is not ran[0] and "daily reconciliation" in h.backend.output()]


def wait_for(found, timeout=20):
    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, "not within %s s" % timeout
        time.sleep(0.05)
    return found()


def query(url, sql, *args):
    async def run():
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()
