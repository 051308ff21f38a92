"""The console's page per order (GET /sim/console/orders/<no>) and its data (.../data), in
process: a v2 JSAPI order through pay, notification and refund, a v3 Native order, masked
keys, 404s."""
import json
import re

import pytest

from simulator.app import make_app
from simulator.config import SimConfig
from simulator.plane.console import mask_secret
from simulator.state import State
from simulator.v3 import keys as v3keys
from tests.support.sim import (DEMO_API_KEY, DEMO_MCH_ID, DEMO_SECRET, Receiver, call,
                               new_order, pay_params, post_xml, refund_fields, signed_xml,
                               stop_simulator, wait_for)
from tests.support.sim3 import APIV3_KEY, APPID, MCHID, V3Receiver, v3_call

TIME_SCALE = 0.001
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+08:00$")
SANDBOX_KEY = SimConfig.demo().merchants[DEMO_MCH_ID].sandbox_key


def settled(application):
    return all(n["outcome"] != "pending" for n in application.sim_state.notifications)


def state_for(request):
    """A v2 simulator's state; with API v3 keys for a test that asks for v3_merchant."""
    if "v3_merchant" not in request.fixturenames:
        return State(SimConfig.demo(), time_scale=TIME_SCALE)
    setup = v3keys.prepare(request.getfixturevalue("v3_dir"), MCHID, APPID, APIV3_KEY,
                           "public-key", merchant_cert=request.getfixturevalue(
                               "v3_merchant").cert_file)
    return State(SimConfig.demo(), time_scale=TIME_SCALE, v3=setup)


@pytest.fixture
def app(io_loop, request):
    application = make_app(state_for(request), notify_timeout=2.0)
    application.add_handlers(r".*", [(r"/test-notify", Receiver, {"received": []}),
                                     (r"/v3-notify", V3Receiver, {"box": {}})])
    yield application
    io_loop.run_sync(lambda: wait_for(lambda: settled(application)))
    stop_simulator(application, io_loop)


@pytest.fixture
def base(http_port):
    return "http://127.0.0.1:%d" % http_port


async def data_of(client, base, no):
    status, data = await call(client, base + "/sim/console/orders/%s/data" % no)
    assert status == 200, data
    return data


async def v2_order_paid_notified_refunded(client, base, app, no="V1"):
    prepay_id, _ = await new_order(client, base, no, notify_url=base + "/test-notify")
    await new_order(client, base, no + "X", notify_url=base + "/test-notify")   # another order
    status, paid = await call(client, base + "/sim/pay", "POST", pay_params(prepay_id))
    assert status == 200, paid
    order = app.sim_state.orders[(DEMO_MCH_ID, no)]
    assert await wait_for(lambda: order.notify_delivered)
    _, query = await post_xml(client, base + "/pay/orderquery", signed_xml({
        "appid": order.appid, "mch_id": DEMO_MCH_ID, "nonce_str": "q",
        "transaction_id": paid["transaction_id"]}))
    assert query["trade_state"] == "SUCCESS", query
    _, refund = await post_xml(client, base + "/secapi/pay/refund", signed_xml(
        refund_fields("R" + no, out_trade_no=no, notify_url=base + "/test-notify")))
    assert refund["result_code"] == "SUCCESS", refund
    assert await wait_for(lambda: order.refunds[0].notify_delivered)
    assert await wait_for(lambda: settled(app))
    return prepay_id, paid["transaction_id"]


@pytest.mark.gen_test
async def test_v2_jsapi_order_through_pay_notify_and_refund(http_client, base, app):
    prepay_id, transaction_id = await v2_order_paid_notified_refunded(http_client, base, app)
    data = await data_of(http_client, base, "V1")
    assert data["revision"] == app.sim_state.revision
    order = data["order"]
    assert (order["out_trade_no"], order["version"], order["trade_type"]) == ("V1", "v2", "JSAPI")
    assert (order["total_fee"], order["refunded_fee"], order["trade_state"]) == (100, 30, "REFUND")
    assert ISO.match(order["created_at"]) and ISO.match(order["paid_at"]), order
    paths = [r["path"] for r in data["requests"]]
    assert paths == ["/pay/unifiedorder", "/sim/pay", "/pay/orderquery", "/secapi/pay/refund"]
    for entry in data["requests"]:
        assert ISO.match(entry["at"]) and entry["status"] == 200 and entry["id"], entry
        assert entry["request_body"] and entry["answer_body"], entry
    unified, pay, query, refund = data["requests"]
    assert "<out_trade_no><![CDATA[V1]]></out_trade_no>" in unified["request_body"]
    assert prepay_id in unified["answer_body"] and prepay_id in pay["request_body"]
    assert transaction_id in query["request_body"] and "V1" not in query["request_body"]
    assert "RV1" in refund["request_body"]
    [attempt] = data["notifications"]
    assert attempt["outcome"] == "success" and ISO.match(attempt["at"])
    assert transaction_id in attempt["body_sent"] and "SUCCESS" in attempt["answer"]
    assert attempt["url"] == base + "/test-notify" and attempt["status"] == 200
    [refund_row] = data["refunds"]
    assert (refund_row["out_refund_no"], refund_row["refund_fee"], refund_row["status"]) == (
        "RV1", 30, "SUCCESS")
    [refund_attempt] = refund_row["notifications"]
    assert refund_attempt["outcome"] == "success" and "<req_info>" in refund_attempt["body_sent"]
    assert data["bill_lines"] == []
    actions = data["actions"]
    assert actions["pay"] is False and actions["cancel"] is False
    assert "normal" in actions["resend_modes"] and actions["refundable_fee"] == 70
    assert actions["refund_outcomes"] == ["SUCCESS", "REFUNDCLOSE", "CHANGE"]


@pytest.mark.gen_test
async def test_bill_lines_once_the_day_has_ended(http_client, base, app):
    _, transaction_id = await v2_order_paid_notified_refunded(http_client, base, app, "B1")
    status, _ = await call(http_client, base + "/sim/clock", "POST", {"advance": 86400})
    assert status == 200
    lines = (await data_of(http_client, base, "B1"))["bill_lines"]
    assert len(lines) == 2 and all("`B1" in line and transaction_id in line for line in lines)
    assert "`RB1" in lines[1]


@pytest.mark.gen_test
async def test_unpaid_order_may_be_paid_or_cancelled(http_client, base, app):
    await new_order(http_client, base, "U1")
    data = await data_of(http_client, base, "U1")
    assert data["actions"]["pay"] is True and data["actions"]["cancel"] is True
    assert data["actions"]["resend_modes"] == data["actions"]["forged_modes"]
    assert data["order"]["paid_at"] is None and data["notifications"] == []


@pytest.mark.gen_test
async def test_keys_in_bodies_are_masked(http_client, base, app):
    # a developer who put the API key into attach, and a bad sign explained
    await new_order(http_client, base, "K1", attach=DEMO_API_KEY)
    await post_xml(http_client, base + "/pay/orderquery", signed_xml({
        "appid": app.sim_state.orders[(DEMO_MCH_ID, "K1")].appid, "mch_id": DEMO_MCH_ID,
        "nonce_str": "q", "out_trade_no": "K1"}, key=SANDBOX_KEY))
    data = await data_of(http_client, base, "K1")
    logged = json.dumps([data["requests"], data["notifications"]], ensure_ascii=False)
    for secret in (DEMO_API_KEY, DEMO_SECRET, SANDBOX_KEY):
        assert secret not in logged
    unified, query = data["requests"]
    assert mask_secret(DEMO_API_KEY) in unified["request_body"]
    assert query["signature"] == "bad" and query["explanation"]
    _, requests = await call(http_client, base + "/sim/requests")
    assert DEMO_API_KEY not in json.dumps(requests)


@pytest.mark.gen_test
async def test_unknown_or_bad_order_is_404(http_client, base, app):
    for no in ("NOPE", "a%20b", "x" * 40):
        for suffix in ("", "/data"):
            status, data = await call(http_client, base + "/sim/console/orders/" + no + suffix)
            assert status == 404 and data["error"]["code"] == "ORDER_NOT_FOUND", (no, data)


@pytest.mark.gen_test
async def test_order_page_is_html_under_the_console_csp(http_client, base, app):
    await new_order(http_client, base, "H1")
    resp = await http_client.fetch(base + "/sim/console/orders/H1")
    assert resp.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert b"/sim/console/static/" in resp.body


@pytest.mark.gen_test
async def test_v3_native_order(http_client, base, app, v3_merchant):
    body = {"appid": APPID, "mchid": MCHID, "description": "Coffee", "out_trade_no": "NATIVE1",
            "notify_url": base + "/v3-notify", "amount": {"total": 388, "currency": "CNY"}}
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST",
                                    "/v3/pay/transactions/native", body)
    assert status == 200, text
    status, paid = await call(http_client, base + "/sim/orders/NATIVE1/phone", "POST",
                              {"result": "SUCCESS"})
    assert status == 200, paid
    assert await wait_for(lambda: app.sim_state.orders[(MCHID, "NATIVE1")].notify_delivered)
    url = "/v3/pay/transactions/id/%s?mchid=%s" % (paid["transaction_id"], MCHID)
    status, _, _ = await v3_call(http_client, base, v3_merchant, "GET", url)
    assert status == 200
    data = await data_of(http_client, base, "NATIVE1")
    order = data["order"]
    assert (order["version"], order["trade_type"], order["total_fee"]) == ("v3", "NATIVE", 388)
    create, phone, query = data["requests"]
    assert create["path"] == "/v3/pay/transactions/native"
    assert json.loads(create["request_body"])["out_trade_no"] == "NATIVE1"
    assert json.loads(create["answer_body"])["code_url"].startswith("weixin://")
    assert phone["path"] == "/sim/orders/NATIVE1/phone" and phone["status"] == 200
    assert query["path"].endswith(paid["transaction_id"])
    assert paid["transaction_id"] in query["answer_body"]
    [attempt] = data["notifications"]
    assert attempt["outcome"] == "success" and "resource" in json.loads(attempt["body_sent"])
    assert APIV3_KEY not in json.dumps(data)
