"""The backend against the simulator's closer-to-WeChat traffic (issue 13): notifications that
carry a signed sign_type, coupon payments, answers with empty fields, a closeorder answer
without appid/mch_id, CDATA everywhere."""
import asyncio

import pytest

from server.domain import CLOSED, NOTPAY, SUCCESS
from tests.support import DEMO
from tests.support.api import call, create, login, paid_in_store

pytestmark = pytest.mark.gen_test(timeout=20)
FAIL_REPLY = b"<xml><return_code>FAIL</return_code></xml>"


async def pay_with(http_client, sim, payment, **extra):
    status, data = await call(http_client, "POST", sim.url + "/sim/pay", dict(payment, appid=DEMO["appid"], **extra))
    assert status == 200, data
    return data


@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
async def test_a_notification_with_a_signed_sign_type_is_accepted(http_client, base_url, sim, app, sign_type):
    sim.state.notify_sign_type_probability = 1.0     # every notification carries sign_type
    order = await create(http_client, base_url, await login(http_client, base_url, sim))
    await pay_with(http_client, sim, order["payment"])
    await paid_in_store(app, order["out_trade_no"])
    assert (await app.service.store.events(order["out_trade_no"]))[-1] == (NOTPAY, SUCCESS, "notify")
    _, log = await call(http_client, "GET", sim.url + "/sim/notifications")
    attempts = [n for n in log["notifications"] if n["out_trade_no"] == order["out_trade_no"]]
    assert attempts[0]["sign_type_field"] is True and attempts[0]["outcome"] == "success"


async def test_a_coupon_payment_by_notification_and_by_orderquery(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    notified = await create(http_client, base_url, auth, {"product_id": "cake"})
    await pay_with(http_client, sim, notified["payment"], coupon_fee=600)
    await paid_in_store(app, notified["out_trade_no"])           # total_fee 2600 though 2000 was cash
    queried = await create(http_client, base_url, auth, {"product_id": "cake"})
    real_notify = app.service.handle_notify
    app.service.handle_notify = lambda body: asyncio.sleep(0, FAIL_REPLY)  # its notification is lost
    try:
        await pay_with(http_client, sim, queried["payment"], coupon_fee=100, coupon_type="NO_CASH")
        status, view = await call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % queried["out_trade_no"],
                                  headers=auth)
    finally:
        app.service.handle_notify = real_notify
    assert status == 200 and view["status"] == SUCCESS and view["total_fee"] == 2600


async def test_empty_fields_in_orderquery_and_closeorder_answers(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    status, view = await call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % order["out_trade_no"],
                              headers=auth)          # orderquery: empty attach and device_info, signed without them
    assert status == 200 and view["status"] == NOTPAY
    status, view = await call(http_client, "POST", base_url + "/api/orders/%s/close" % order["out_trade_no"],
                              headers=auth)          # closeorder: empty result_msg
    assert status == 200 and view["status"] == CLOSED
