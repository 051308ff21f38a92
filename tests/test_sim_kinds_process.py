"""Unmodified wechatpy creating Native, App and H5 (MWEB) orders at a real run_simulator.py,
the phone paying them through /sim/pay, then orderquery and the signed notification."""
import uuid

import pytest
import requests
from wechatpy.pay import WeChatPay

from tests.support.sim import (DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, NotifySink,
                               simulator_process)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sim():
    with simulator_process("control plane") as proc:
        yield proc


def wechatpy(sim):
    pay = WeChatPay(DEMO_APPID, DEMO_API_KEY, DEMO_MCH_ID, sandbox=False, timeout=5)
    pay.API_BASE_URL = sim.url + "/"
    pay._http.trust_env = False
    return pay


def phone(sim, body):
    session = requests.Session()
    session.trust_env = False
    return session.post(sim.url + "/sim/pay", json=body, timeout=5)


def paid_and_notified(pay, sink, out_trade_no, trade_type):
    """orderquery says SUCCESS and the notification verifies with wechatpy; the notification."""
    queried = pay.order.query(out_trade_no=out_trade_no)
    assert (queried["trade_state"], queried["trade_type"]) == ("SUCCESS", trade_type)
    assert sink.wait(1), sink.bodies
    note = pay.parse_payment_result(sink.bodies[0])     # raises unless the sign verifies
    assert pay.check_signature(dict(note))
    assert (note["out_trade_no"], note["trade_type"]) == (out_trade_no, trade_type)
    assert note["openid"] == queried["openid"] and note["openid"].startswith("o")
    return note


def test_wechatpy_native_order_paid_by_scanning_its_code_url(sim):
    pay = wechatpy(sim)
    out_trade_no = "NAT" + uuid.uuid4().hex[:20]
    with NotifySink() as sink:
        created = pay.order.create(trade_type="NATIVE", body="Coffee", total_fee=1200,
                                   notify_url=sink.url, client_ip="127.0.0.1",
                                   product_id="coffee", out_trade_no=out_trade_no)
        assert created["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
        assert pay.check_signature(dict(created))
        assert pay.order.query(out_trade_no=out_trade_no)["trade_state"] == "NOTPAY"
        paid = phone(sim, {"code_url": created["code_url"]})
        assert paid.status_code == 200, paid.text
        note = paid_and_notified(pay, sink, out_trade_no, "NATIVE")
    assert note["transaction_id"] == paid.json()["transaction_id"]
    again = phone(sim, {"code_url": created["code_url"]})
    assert again.status_code == 409 and "该订单已支付" in again.json()["errMsg"]


def test_wechatpy_app_order_paid_with_its_appapi_params(sim):
    pay = wechatpy(sim)
    out_trade_no = "APP" + uuid.uuid4().hex[:20]
    with NotifySink() as sink:
        created = pay.order.create(trade_type="APP", body="Coins", total_fee=600,
                                   notify_url=sink.url, client_ip="127.0.0.1",
                                   out_trade_no=out_trade_no)
        params = pay.order.get_appapi_params(created["prepay_id"])
        paid = phone(sim, params)
        assert paid.status_code == 200, paid.text
        paid_and_notified(pay, sink, out_trade_no, "APP")


def test_wechatpy_h5_order_paid_by_opening_its_mweb_url(sim):
    pay = wechatpy(sim)
    out_trade_no = "H5" + uuid.uuid4().hex[:20]
    scene = '{"h5_info": {"type": "Wap", "wap_url": "https://shop.example", "wap_name": "Shop"}}'
    with NotifySink() as sink:
        created = pay.order.create(trade_type="MWEB", body="Tea", total_fee=800,
                                   notify_url=sink.url, client_ip="127.0.0.1",
                                   scene_info=scene, out_trade_no=out_trade_no)
        assert created["mweb_url"].startswith(sim.url + "/cgi-bin/mmpayweb-bin/checkmweb?")
        paid = phone(sim, {"mweb_url": created["mweb_url"]})
        assert paid.status_code == 200, paid.text
        paid_and_notified(pay, sink, out_trade_no, "MWEB")
