"""Refunds end to end over TLS: run_simulator.py --tls and run_server.py with the merchant certificate."""
import time

import pytest
import requests

from tests.support.shop import TLSShop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    s = TLSShop(tmp_path_factory.mktemp("refunds")).start()
    yield s
    s.stop()


def paid_order(shop, product="cake"):
    auth = shop.login()
    order = shop.create(auth, {"product_id": product})
    assert shop.pay(order["payment"]).status_code == 200
    shop.wait_status(auth, order["out_trade_no"], "SUCCESS")
    return auth, order["out_trade_no"]


def test_refund_part_then_rest_then_third_refused_locally(shop):
    auth, no = paid_order(shop)
    first = shop.refund(no, {"refund_fee": 600, "reason": "damaged"})
    assert first.status_code == 202 and first.json()["status"] == "PROCESSING"
    shop.wait_refund(no, first.json()["out_refund_no"], "SUCCESS")
    rest = shop.refund(no, {"refund_fee": 2000})
    assert rest.status_code == 202
    shop.wait_refund(no, rest.json()["out_refund_no"], "SUCCESS")
    third = shop.refund(no, {"refund_fee": 1})
    assert third.status_code == 409 and third.json()["error"]["code"] == "REFUND_EXCEEDS_PAID"
    sim_refunds = shop.simulator("GET", "/sim/refunds?out_trade_no=" + no).json()["refunds"]
    assert sorted(r["refund_fee"] for r in sim_refunds) in ([600, 2000], ["600", "2000"])
    view = shop.order(auth, no).json()
    assert view["status"] == "REFUND" and view["refunded_fee"] == 2600
    for rno in (first.json()["out_refund_no"], rest.json()["out_refund_no"]):
        events = shop.refund_events(rno)
        assert [e for e in events if e[1] == "SUCCESS"] == [("PROCESSING", "SUCCESS", "notify")]


def test_repeated_out_refund_no_refunds_once_and_duplicates_processed_once(shop):
    _, no = paid_order(shop)
    answers = [shop.refund(no, {"refund_fee": 100, "out_refund_no": "E2E-1"}) for _ in range(3)]
    assert {a.status_code for a in answers} == {202} and len({a.json()["refund_id"] for a in answers}) == 1
    shop.wait_refund(no, "E2E-1", "SUCCESS")
    assert shop.simulator("POST", "/sim/refunds/E2E-1/notify", json={"mode": "duplicate", "count": 5}).status_code == 200
    time.sleep(0.5)
    assert len(shop.simulator("GET", "/sim/refunds?out_trade_no=" + no).json()["refunds"]) == 1
    assert [e for e in shop.refund_events("E2E-1") if e[1] == "SUCCESS"] == [("PROCESSING", "SUCCESS", "notify")]


def test_refundclose_shown_as_failed(shop):
    _, no = paid_order(shop, "tea")
    shop.simulator("POST", "/sim/orders/%s/refund-outcome" % no, json={"status": "REFUNDCLOSE"})
    r = shop.refund(no, {"refund_fee": 800})
    shop.wait_refund(no, r.json()["out_refund_no"], "REFUNDCLOSE")
    admin = shop.admin(no)
    assert admin["status"] == "SUCCESS" and admin["refundable_fee"] == 800


def test_secapi_without_client_certificate_refused_by_the_simulator(shop):
    with pytest.raises(requests.exceptions.ConnectionError):
        shop.simulator("POST", "/secapi/pay/refund", data=b"<xml><appid>x</appid></xml>")
    log = shop.simulator("GET", "/sim/requests").json()["requests"]
    assert any(e.get("error") == "NO_CLIENT_CERT" for e in log)
    # plain pay paths need no client certificate
    assert shop.simulator("POST", "/pay/orderquery", data=b"<xml/>").status_code == 200
