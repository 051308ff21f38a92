"""Notification delivery: signatures, retries on WeChat's schedule, resend modes, isolation."""
import asyncio
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
import tornado.web
import xmltodict

from simulator.app import make_app
from simulator.config import SimConfig
from simulator.state import State
from tests.support.sim import (stop_simulator, DEMO_API_KEY, DEMO_MCH_ID, call, ext_sign, new_order,
                               pay_params, post_xml, signed_xml, wait_for)

SUCCESS = (b"<xml><return_code><![CDATA[SUCCESS]]></return_code>"
           b"<return_msg><![CDATA[OK]]></return_msg></xml>")
FAIL = (b"<xml><return_code><![CDATA[FAIL]]></return_code>"
        b"<return_msg><![CDATA[busy]]></return_msg></xml>")
TIME_SCALE = 0.01       # 15 s -> 0.15 s
NOTIFY_TIMEOUT = 0.5


class Box:
    """What the test's notify receiver got, and what it answers."""

    def __init__(self):
        self.received, self.times, self.replies = [], [], []
        self.default, self.delay = SUCCESS, 0.0
        self.gate = None          # an asyncio.Event the receiver waits for, when set
        self.inflight = self.max_inflight = 0


class Receiver(tornado.web.RequestHandler):
    """A merchant backend's notify_url, in the test: parses with xmltodict, not the simulator."""

    def initialize(self, box):
        self.box = box

    async def post(self):
        box = self.box
        box.inflight += 1
        box.max_inflight = max(box.max_inflight, box.inflight)
        try:
            box.received.append(dict(xmltodict.parse(self.request.body)["xml"]))
            box.times.append(time.monotonic())
            if box.gate is not None:
                await box.gate.wait()
            if box.delay:
                await asyncio.sleep(box.delay)
            self.finish(box.replies.pop(0) if box.replies else box.default)
        finally:
            box.inflight -= 1


@pytest.fixture
def box():
    return Box()


@pytest.fixture
def app(io_loop, box):
    application = make_app(State(SimConfig.demo(), time_scale=TIME_SCALE),
                           notify_timeout=NOTIFY_TIMEOUT)
    application.add_handlers(r".*", [(r"/test-notify", Receiver, {"box": box})])
    yield application
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


async def paid_order(http_client, base, out_trade_no="N1", sign_type="MD5", key=DEMO_API_KEY,
                     prefix="", **fields):
    prepay_id, openid = await new_order(http_client, base, out_trade_no, sign_type, prefix, key,
                                        notify_url=base + "/test-notify", **fields)
    status, data = await call(http_client, base + "/sim/pay", "POST",
                              pay_params(prepay_id, key, sign_type))
    assert status == 200, data
    return data["transaction_id"], openid


async def notifications(http_client, base, out_trade_no=None):
    url = base + "/sim/notifications" + ("?out_trade_no=" + out_trade_no if out_trade_no else "")
    return (await call(http_client, url))[1]


def verified(fields, sign_type="MD5", key=DEMO_API_KEY):
    return fields["sign"] == ext_sign(fields, key, sign_type)


@pytest.mark.gen_test(timeout=10)
async def test_hmac_sha256_order_end_to_end(http_client, base, box):
    transaction_id, openid = await paid_order(http_client, base, "E1", "HMAC-SHA256",
                                              attach="cart-7")
    assert await wait_for(lambda: box.received)
    note = box.received[0]
    assert "sign_type" not in note                       # like real WeChat
    assert verified(note, "HMAC-SHA256") and not verified(note, "MD5")
    assert (note["return_code"], note["result_code"]) == ("SUCCESS", "SUCCESS")
    assert (note["out_trade_no"], note["transaction_id"]) == ("E1", transaction_id)
    assert (note["openid"], note["total_fee"], note["cash_fee"]) == (openid, "100", "100")
    assert (note["appid"], note["mch_id"], note["attach"]) == ("wxd930ea5d5a258f4f",
                                                               DEMO_MCH_ID, "cart-7")
    for name in ("nonce_str", "is_subscribe", "trade_type", "bank_type", "fee_type"):
        assert note[name]
    assert re.match(r"^4200[0-9]{24}$", note["transaction_id"])
    beijing_now = datetime.now(timezone(timedelta(hours=8)))
    time_end = datetime.strptime(note["time_end"], "%Y%m%d%H%M%S")
    assert abs(time_end - beijing_now.replace(tzinfo=None)) < timedelta(minutes=1)
    _, data = await post_xml(http_client, base + "/pay/orderquery",
                             signed_xml({"appid": note["appid"], "mch_id": DEMO_MCH_ID,
                                         "nonce_str": "z", "out_trade_no": "E1"},
                                        sign_type="HMAC-SHA256"))
    assert data["trade_state"] == "SUCCESS" and verified(data, "HMAC-SHA256")
    log = await notifications(http_client, base, "E1")
    assert [r["outcome"] for r in log["notifications"]] == ["success"]
    assert log["notifications"][0]["url"] == base + "/test-notify"


@pytest.mark.gen_test(timeout=10)
async def test_fail_twice_then_success_follows_schedule(http_client, base, box):
    box.replies = [FAIL, b"not xml at all"]
    await paid_order(http_client, base, "F1")
    assert await wait_for(lambda: len(box.received) == 3, timeout=5)
    gaps = [b - a for a, b in zip(box.times, box.times[1:])]
    for gap in gaps:                     # 15 s and 15 s at time scale 0.01
        assert 0.12 <= gap <= 0.6, gaps
    await asyncio.sleep(0.5)            # nothing after the first success
    log = (await notifications(http_client, base, "F1"))
    records = log["notifications"]
    assert [r["attempt"] for r in records] == [1, 2, 3]
    assert [r["outcome"] for r in records] == ["fail", "fail", "success"]
    assert [r["mode"] for r in records] == ["auto"] * 3
    assert records[0]["next_attempt_in"] == pytest.approx(0.15)
    assert records[1]["response"].startswith("not xml") and records[1]["status"] == 200
    assert log["pending"] == [] and len(box.received) == 3


@pytest.mark.gen_test(timeout=10)
async def test_full_schedule_is_wechats(http_client, base, box, app):
    box.default = FAIL
    app.sim_state.clock.time_scale = 0.00002    # the whole 24h4m in under 2 s
    await paid_order(http_client, base, "F2")
    assert await wait_for(lambda: len(box.received) == 16, timeout=8, interval=0.02)
    await asyncio.sleep(0.3)
    records = (await notifications(http_client, base, "F2"))["notifications"]
    assert len(records) == 16 and "next_attempt_in" not in records[-1]
    gaps = [r["next_attempt_in"] for r in records[:-1]]
    expected = [15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800,
                21600, 21600]
    assert gaps == pytest.approx([g * 0.00002 for g in expected])
    assert sum(expected) == 24 * 3600 + 4 * 60


@pytest.mark.gen_test(timeout=10)
async def test_timeout_counts_as_failure_and_slow_receiver_does_not_slow_api(http_client,
                                                                            base, box):
    box.gate = asyncio.Event()           # the receiver answers only when the test says so
    await paid_order(http_client, base, "S1")
    assert await wait_for(lambda: box.inflight == 1)
    _, data = await post_xml(http_client, base + "/pay/orderquery",
                             {"appid": "wxd930ea5d5a258f4f", "mch_id": DEMO_MCH_ID,
                              "nonce_str": "z", "out_trade_no": "S1"})
    assert data["trade_state"] == "SUCCESS" and box.inflight == 1   # answered while it still waits
    for _ in range(200):                 # the 0.5 s notify timeout ends the first attempt
        records = (await notifications(http_client, base, "S1"))["notifications"]
        if records and records[0]["outcome"] not in (None, "pending"):
            break
        await asyncio.sleep(0.02)
    assert records[0]["outcome"] == "timeout"
    box.gate.set()
    assert await wait_for(lambda: len(box.received) >= 2, timeout=5)


@pytest.mark.gen_test(timeout=10)
async def test_duplicate_sends_concurrent_copies(http_client, base, box):
    await paid_order(http_client, base, "D1")
    assert await wait_for(lambda: box.received)
    box.delay = 0.2
    status, data = await call(http_client, base + "/sim/orders/D1/notify", "POST",
                              {"mode": "duplicate", "count": 4})
    assert status == 200 and len(data["attempts"]) == 4
    assert box.max_inflight >= 2         # they overlapped: sent at once, not in turn
    assert len(box.received) == 5
    copies = box.received[1:]
    assert all(verified(c) for c in copies)
    assert {c["transaction_id"] for c in copies} == {box.received[0]["transaction_id"]}
    assert {r["mode"] for r in data["attempts"]} == {"duplicate"}


@pytest.mark.gen_test(timeout=10)
async def test_forgeries_and_they_do_not_disturb_real_retries(http_client, base, box, app):
    app.sim_state.clock.time_scale = 0.05        # the first retry is 0.75 s away
    box.default = FAIL
    await paid_order(http_client, base, "G1")
    assert await wait_for(lambda: len(box.received) == 1)
    pending_before = (await notifications(http_client, base))["pending"]
    assert [p["attempt"] for p in pending_before] == [2]
    for mode in ("bad_sign", "wrong_amount"):
        status, data = await call(http_client, base + "/sim/orders/G1/notify", "POST",
                                  {"mode": mode})
        assert status == 200 and data["attempts"][0]["forged"] is True
    bad_sign, wrong_amount = box.received[1], box.received[2]
    assert not verified(bad_sign) and bad_sign["total_fee"] == "100"
    assert verified(wrong_amount) and wrong_amount["total_fee"] != "100"
    box.default = SUCCESS       # even a (wrong) SUCCESS reply to a forgery stops nothing
    await call(http_client, base + "/sim/orders/G1/notify", "POST", {"mode": "wrong_amount"})
    assert (await notifications(http_client, base))["pending"] == pending_before
    assert await wait_for(lambda: len(box.received) == 5, timeout=3)
    records = (await notifications(http_client, base, "G1"))["notifications"]
    assert [(r["mode"], r["attempt"]) for r in records][-1] == ("auto", 2)
    assert records[-1]["outcome"] == "success"


@pytest.mark.gen_test(timeout=10)
async def test_normal_resend_and_unpaid_order(http_client, base, box):
    await paid_order(http_client, base, "R1")
    assert await wait_for(lambda: box.received)
    status, data = await call(http_client, base + "/sim/orders/R1/notify", "POST", {})
    assert status == 200 and data["attempts"][0]["outcome"] == "success"
    assert len(box.received) == 2 and verified(box.received[1])
    await new_order(http_client, base, "R2", notify_url=base + "/test-notify")
    status, data = await call(http_client, base + "/sim/orders/R2/notify", "POST", {})
    assert status == 409 and data["error"]["code"] == "NOT_PAID"
    status, data = await call(http_client, base + "/sim/orders/R2/notify", "POST",
                              {"mode": "wrong_amount"})      # a forged "it was paid"
    assert status == 200 and data["attempts"][0]["forged"]
    forged = box.received[-1]
    assert forged["out_trade_no"] == "R2" and verified(forged) and forged["total_fee"] == "101"
    assert re.match(r"^4200[0-9]{24}$", forged["transaction_id"])
    assert (await call(http_client, base + "/sim/orders/R2"))[1]["trade_state"] == "NOTPAY"
    status, data = await call(http_client, base + "/sim/orders/R1/notify", "POST",
                              {"mode": "loud"})
    assert status == 400


@pytest.mark.gen_test(timeout=10)
async def test_clock_advance_brings_retries_forward(http_client, base, box, app):
    app.sim_state.clock.time_scale = 1.0         # the first retry is 15 real seconds away
    box.default = FAIL
    await paid_order(http_client, base, "K1")
    assert await wait_for(lambda: len(box.received) == 1)
    await call(http_client, base + "/sim/clock", "POST", {"advance": 14})
    await asyncio.sleep(0.2)
    assert len(box.received) == 1
    await call(http_client, base + "/sim/clock", "POST", {"advance": 1})
    assert await wait_for(lambda: len(box.received) == 2, timeout=2)


@pytest.mark.gen_test(timeout=10)
async def test_reset_and_shutdown_cancel_pending_retries(http_client, base, box, app):
    box.default = FAIL
    await paid_order(http_client, base, "X1")
    assert await wait_for(lambda: len(box.received) == 1)
    assert (await notifications(http_client, base))["pending"]
    await call(http_client, base + "/sim/reset", "POST")
    assert (await notifications(http_client, base))["pending"] == []
    await asyncio.sleep(0.4)
    assert len(box.received) == 1
    await paid_order(http_client, base, "X2")
    assert await wait_for(lambda: len(box.received) == 2)
    app.sim_notifier.shutdown()
    assert app.sim_notifier.pending() == []
    await asyncio.sleep(0.4)
    assert len(box.received) == 2


@pytest.mark.gen_test(timeout=10)
async def test_sandbox_notification_signed_with_sandbox_key(http_client, base, box, app):
    sandbox_key = app.sim_state.config.merchants[DEMO_MCH_ID].sandbox_key
    await paid_order(http_client, base, "SB1", key=sandbox_key, prefix="/sandboxnew")
    assert await wait_for(lambda: box.received)
    assert verified(box.received[0], key=sandbox_key)
    assert not verified(box.received[0])


@pytest.mark.gen_test(timeout=10)
async def test_unreachable_notify_url_is_recorded_and_retried(http_client, base, app):
    from tests.support.processes import free_port
    prepay_id, _ = await new_order(http_client, base, "U1",
                                   notify_url="http://127.0.0.1:%d/n" % free_port())
    await call(http_client, base + "/sim/pay", "POST", pay_params(prepay_id))
    assert await wait_for(lambda: len(app.sim_state.notifications) >= 2, timeout=3)
    records = (await notifications(http_client, base, "U1"))["notifications"]
    assert records[0]["outcome"] == "error" and records[0]["status"] is None
