"""v3 notifications are acknowledged only after the store's move (atomic and durable before
it returns, by the Store contract): with the move held, WeChat gets no 200; once it is let
through, it does, and the change is there for any other connection to see."""
import asyncio
import json
import sqlite3

import pytest

from tests.support.api import wx_login
from tests.support.server3 import (app3, key_mode, notification, pay_lost, refund_notice, sim3,  # noqa: F401
                                   sim3_dir, transaction)

pytestmark = pytest.mark.gen_test(timeout=30)
ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


@pytest.fixture
def app(app3):
    return app3


def committed(app, sql):
    conn = sqlite3.connect(app.service.store.path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def held(store, method, request, check_held):
    """Send request with store.<method> held at its start; check while held; release; the answer."""
    real, entered, release = getattr(store, method), asyncio.Event(), asyncio.Event()

    async def gated(*args, **kwargs):
        entered.set()
        await release.wait()
        return await real(*args, **kwargs)
    setattr(store, method, gated)
    try:
        answer = asyncio.ensure_future(request)
        await asyncio.wait_for(entered.wait(), 10)
        await asyncio.sleep(0.3)          # time enough for an implementation that answers early
        assert not answer.done(), "answered before the store's move"
        check_held()
        release.set()
        return await answer
    finally:
        setattr(store, method, real)


async def test_no_200_before_the_payment_and_the_refund_are_stored(http_client, base_url, sim3, app):
    code = await wx_login(http_client, sim3)
    login = await http_client.fetch(base_url + "/api/login", method="POST", body=json.dumps({"code": code}))
    auth = {"Authorization": "Bearer " + json.loads(login.body)["token"]}
    created = await http_client.fetch(base_url + "/api/orders", method="POST", body=b'{"product_id": "tea"}',
                                      headers=auth)
    order = json.loads(created.body)
    pay_lost(sim3.state, order["out_trade_no"])     # paid at WeChat; the test delivers the notification
    headers, body = notification(transaction(sim3.state, order["out_trade_no"]))
    request = http_client.fetch(base_url + "/wechat/pay/v3/notify", method="POST", body=body, headers=headers,
                                raise_error=False)
    response = await held(app.service.store, "transition", request,
                          lambda: committed(app, "SELECT status FROM orders") == [("NOTPAY",)] or pytest.fail())
    assert response.code == 200 and json.loads(response.body)["code"] == "SUCCESS"
    assert committed(app, "SELECT status FROM orders") == [("SUCCESS",)]

    refund = await http_client.fetch(base_url + "/admin/orders/%s/refunds" % order["out_trade_no"], method="POST",
                                     body=b'{"refund_fee": 100, "out_refund_no": "RF-HELD"}', headers=ADMIN)
    assert refund.code == 202
    headers, body = notification(refund_notice(sim3.state, "RF-HELD"), "REFUND.SUCCESS")
    request = http_client.fetch(base_url + "/wechat/refund/v3/notify", method="POST", body=body, headers=headers,
                                raise_error=False)
    response = await held(app.service.store, "refund_transition", request,
                          lambda: committed(app, "SELECT status FROM refunds") == [("PROCESSING",)] or pytest.fail())
    assert response.code == 200
    assert committed(app, "SELECT status FROM refunds") == [("SUCCESS",)]
