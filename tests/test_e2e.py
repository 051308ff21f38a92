"""Process-level end to end: run_simulator.py and run_server.py as real processes, driven with requests."""
import signal
import time

import pytest
import requests

from tests.support.processes import Proc, free_port
from tests.support.shop import Shop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["MD5", "HMAC-SHA256"])
def shop(request, tmp_path_factory):
    s = Shop(tmp_path_factory.mktemp("e2e"), request.param).start()
    yield s
    s.stop()


def test_full_flow_to_success(shop):
    auth = shop.login()
    order = shop.create(auth, {"product_id": "cake", "quantity": 3})
    assert order["total_fee"] == 7800 and order["payment"]["signType"] == shop.sign_type
    paid = shop.pay(order["payment"])
    assert paid.status_code == 200 and paid.json()["errMsg"] == "requestPayment:ok"
    view = shop.wait_status(auth, order["out_trade_no"], "SUCCESS")
    assert view["transaction_id"] == paid.json()["transaction_id"]
    assert shop.events(order["out_trade_no"]) == [(None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "notify")]


def test_one_call_flow_and_amount_ignored(shop):
    r = requests.post(shop.backend.url + "/api/orders", timeout=10,
                      json={"product_id": "tea", "quantity": 2, "code": shop.wx_login("carol"), "total_fee": 1})
    assert r.status_code == 201 and r.json()["total_fee"] == 1600
    sim_order = requests.get(shop.sim.url + "/sim/orders/" + r.json()["out_trade_no"], timeout=5).json()
    assert str(sim_order.get("total_fee", sim_order.get("order", {}).get("total_fee"))) == "1600"


def test_other_user_404_and_codes_401(shop):
    alice, eve = shop.login("alice"), shop.login("eve")
    no = shop.create(alice)["out_trade_no"]
    assert shop.order(eve, no).status_code == 404
    code = shop.wx_login()
    assert requests.post(shop.backend.url + "/api/login", json={"code": code}, timeout=10).status_code == 200
    r = requests.post(shop.backend.url + "/api/login", json={"code": code}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["wechat_code"] == 40163
    r = requests.post(shop.backend.url + "/api/login", json={"code": "forged"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["wechat_code"] == 40029


def test_repeated_duplicate_and_forged_notifications(shop):
    auth = shop.login()
    order = shop.create(auth)
    no = order["out_trade_no"]
    for mode in ("bad_sign", "wrong_amount"):
        assert requests.post(shop.sim.url + "/sim/orders/%s/notify" % no, json={"mode": mode}, timeout=5).ok
    deadline = time.monotonic() + 10
    while len([n for n in shop.notifications(no) if n.get("outcome")]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert all(n["outcome"] != "success" for n in shop.notifications(no))
    assert shop.order(auth, no).json()["status"] == "NOTPAY"
    shop.pay(order["payment"])
    shop.wait_status(auth, no, "SUCCESS")
    for mode in ("duplicate", "normal"):
        assert requests.post(shop.sim.url + "/sim/orders/%s/notify" % no, json={"mode": mode}, timeout=5).ok
    time.sleep(0.5)
    assert shop.events(no) == [(None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "notify")]


def test_repay_and_close(shop):
    auth = shop.login()
    order = shop.create(auth)
    no = order["out_trade_no"]
    r = requests.post(shop.backend.url + "/api/orders/%s/payment" % no, headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["payment"]["package"] == order["payment"]["package"]
    r = requests.post(shop.backend.url + "/api/orders/%s/close" % no, headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "CLOSED"
    assert shop.pay(order["payment"]).status_code >= 400
    r = requests.post(shop.backend.url + "/api/orders/%s/payment" % no, headers=auth, timeout=10)
    assert r.status_code == 409


def test_lost_notification_recovered_by_orderquery(tmp_path):
    shop = Shop(tmp_path).start()
    try:
        auth = shop.login()
        order = shop.create(auth)
        no = order["out_trade_no"]
        assert shop.backend.stop() == 0  # the backend is down when WeChat notifies
        paid = shop.pay(order["payment"]).json()
        time.sleep(0.3)
        assert shop.notifications(no)[0]["outcome"] != "success"
        shop.start_backend()  # the next retry is 15 s away; ask WeChat instead
        view = shop.order(auth, no, refresh=True).json()
        assert view["status"] == "SUCCESS" and view["transaction_id"] == paid["transaction_id"]
        assert shop.events(no)[-1] == ("NOTPAY", "SUCCESS", "orderquery")
    finally:
        shop.stop()


def test_quick_start_and_demo(tmp_path):
    port, sim_port = free_port(), free_port()
    with Proc("run_server.py", ["--simulator", "--port", str(port), "--simulator-port", str(sim_port),
                                "--database-url", "sqlite:///%s" % (tmp_path / "q.db"),
                                "--simulator-tls-dir", str(tmp_path / "tls")], port=port) as server:
        demo = Proc("run_simulator.py", ["demo", "--backend", server.url, "--ca-file", str(tmp_path / "tls" / "ca.pem"),
                                         "--simulator", "https://127.0.0.1:%d" % sim_port], wait_port=False)
        assert demo.wait(60) == 0, demo.output()
        out = demo.output()
        assert "[6/6]" in out and "SUCCESS" in out
        assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}
        assert server.stop(signal.SIGTERM) == 0
