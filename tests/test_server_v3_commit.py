"""v3 notifications are acknowledged only after the commit: with the COMMIT of the payment
(or of the refund's outcome) held, WeChat gets no 200; once it goes through, it does."""
import json

import pytest

from tests.support.wechat3 import app3, fake3, key_mode, notification, refund_resource, transaction  # noqa: F401
from tests.test_commit_before_answer import HeldStore, committed_rows, held_then_released

pytestmark = pytest.mark.gen_test(timeout=30)
ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


@pytest.fixture
def backend_store():
    return HeldStore


@pytest.fixture
def app(app3):
    return app3


async def test_no_200_to_wechat_before_the_payment_and_the_refund_are_committed(http_client, base_url, fake3, app):
    login = await http_client.fetch(base_url + "/api/login", method="POST", body=b'{"code": "alice"}')
    auth = {"Authorization": "Bearer " + json.loads(login.body)["token"]}
    created = await http_client.fetch(base_url + "/api/orders", method="POST", body=b'{"product_id": "tea"}',
                                      headers=auth)
    order = json.loads(created.body)
    headers, body = notification(transaction(order["out_trade_no"], order["total_fee"]))
    request = http_client.fetch(base_url + "/wechat/pay/v3/notify", method="POST", body=body, headers=headers,
                                raise_error=False)

    def still_unpaid():
        assert committed_rows(app, "SELECT status FROM orders") == [("NOTPAY",)]
    response = await held_then_released(app.service.store, 1, request, still_unpaid)
    assert response.code == 200 and json.loads(response.body)["code"] == "SUCCESS"
    assert committed_rows(app, "SELECT status FROM orders") == [("SUCCESS",)]

    fake3.pay(order["payment"])
    app.service.store.holding.clear()
    app.service.store.release.clear()
    refund = await http_client.fetch(base_url + "/admin/orders/%s/refunds" % order["out_trade_no"], method="POST",
                                     body=b'{"refund_fee": 100, "out_refund_no": "RF-HELD"}', headers=ADMIN)
    assert refund.code == 202
    headers, body = notification(refund_resource(order["out_trade_no"], "RF-HELD", 100, order["total_fee"]),
                                 "REFUND.SUCCESS")
    request = http_client.fetch(base_url + "/wechat/refund/v3/notify", method="POST", body=body, headers=headers,
                                raise_error=False)

    def still_processing():
        assert committed_rows(app, "SELECT status FROM refunds") == [("PROCESSING",)]
    response = await held_then_released(app.service.store, 1, request, still_processing)
    assert response.code == 200
    assert committed_rows(app, "SELECT status FROM refunds") == [("SUCCESS",)]
