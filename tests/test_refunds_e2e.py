"""Refunds end to end over TLS: run_simulator.py --tls and run_server.py with the merchant certificate."""
import time

import pytest
import requests

from tests.support import ADMIN_TOKEN, DEMO
from tests.support.processes import Proc, free_port
from tests.support.shop import Shop, backend_env

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


class TLSShop(Shop):
    """The simulator with --tls; the backend trusting its CA and holding the merchant certificate."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.tls = tmp_path / "tls"
        self.ca = str(self.tls / "ca.pem")

    def start(self):
        port = free_port()
        self.sim = Proc("run_simulator.py", ["--port", str(port), "--tls", "--tls-dir", str(self.tls),
                                             "--time-scale", "0.1"], port=port)
        self.sim.url = "https://127.0.0.1:%d" % port
        self.start_backend()
        return self

    def start_backend(self):
        port = free_port()
        env = backend_env(self.sim.url, port, self.sign_type)
        env.update(WECHAT_CA_FILE=self.ca, WECHAT_CERT_FILE=str(self.tls / "merchant.pem"),
                   WECHAT_KEY_FILE=str(self.tls / "merchant-key.pem"), ADMIN_TOKEN=ADMIN_TOKEN)
        self.backend = Proc("run_server.py", ["--port", str(port), "--database-url", "sqlite:///" + self.db],
                            env=env, port=port)

    def simulator(self, method, path, **kw):
        return requests.request(method, self.sim.url + path, timeout=10, verify=self.ca, **kw)

    def wx_login(self, user="alice"):
        return self.simulator("POST", "/sim/login", json={"appid": DEMO["appid"], "user": user}).json()["code"]

    def pay(self, payment):
        return self.simulator("POST", "/sim/pay", json=dict(payment, appid=DEMO["appid"]))

    def refund(self, no, body):
        return requests.post(self.backend.url + "/admin/orders/%s/refunds" % no, json=body, headers=ADMIN, timeout=10)

    def admin(self, no):
        return requests.get(self.backend.url + "/admin/orders/" + no, headers=ADMIN, timeout=10).json()

    def wait_refund(self, no, out_refund_no, status, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            refunds = {r["out_refund_no"]: r["status"] for r in self.admin(no)["refunds"]}
            if refunds.get(out_refund_no) == status:
                return
            assert time.monotonic() < deadline, refunds
            time.sleep(0.1)


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
