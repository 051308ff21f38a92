"""Unmodified wechatpy refunding against a real run_simulator.py, over HTTPS with the
merchant certificate (--tls) and over plain HTTP, in production and sandbox mode."""
import uuid

import pytest
import requests
from wechatpy.exceptions import WeChatPayException
from wechatpy.pay import WeChatPay

from simulator import tls
from tests.support.sim import simulator_process, tls_simulator, DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, NotifySink

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory):
    with tls_simulator(str(tmp_path_factory.mktemp("sim-tls"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def plain_sim():
    with simulator_process('no TLS') as proc:
        yield proc


def wechatpy(sim, sandbox, cert_files=None, ca=None):
    """wechatpy's WeChatPay at the simulator; cert_files: whose merchant.pem/-key.pem to
    give it as mch_cert/mch_key; ca: the CA file to trust (HTTPS)."""
    pay = WeChatPay(DEMO_APPID, DEMO_API_KEY, DEMO_MCH_ID, sandbox=sandbox, timeout=5,
                    mch_cert=cert_files.client_cert if cert_files else None,
                    mch_key=cert_files.client_key if cert_files else None)
    pay.API_BASE_URL = sim.url + "/"
    # trust_env off: requests lets REQUESTS_CA_BUNDLE (set in some environments) override
    # a Session's verify.
    pay._http.trust_env = False
    if ca:
        pay._http.verify = ca
    return pay


def paid_order(sim, pay, total_fee=100):
    session = requests.Session()
    session.trust_env = False
    session.verify = pay._http.verify
    openid = session.post(sim.url + "/sim/login", json={"user": "refunder"},
                          timeout=5).json()["openid"]
    out_trade_no = "RF" + uuid.uuid4().hex[:20]
    created = pay.order.create(trade_type="JSAPI", body="refund me", total_fee=total_fee,
                               notify_url="http://127.0.0.1:9/notify", client_ip="127.0.0.1",
                               user_id=openid, out_trade_no=out_trade_no)
    params = pay.jsapi.get_jsapi_params(created["prepay_id"])
    params["appid"] = params.pop("appId")
    paid = session.post(sim.url + "/sim/pay", json=params, timeout=5)
    assert paid.status_code == 200, paid.text
    return out_trade_no, paid.json()["transaction_id"]


def refund_flow(sim, sandbox, cert_files, ca=None):
    pay = wechatpy(sim, sandbox, cert_files, ca)
    out_trade_no, transaction_id = paid_order(sim, pay)
    first, second = "A" + out_trade_no, "B" + out_trade_no
    with NotifySink() as sink:
        r1 = pay.refund.apply(total_fee=100, refund_fee=40, out_refund_no=first,
                              out_trade_no=out_trade_no, notify_url=sink.url)
        assert r1["result_code"] == "SUCCESS" and r1["refund_fee"] == "40"
        assert pay.check_signature(dict(r1))
        again = pay.refund.apply(total_fee=100, refund_fee=40, out_refund_no=first,
                                 out_trade_no=out_trade_no, notify_url=sink.url)
        assert again["refund_id"] == r1["refund_id"]                   # refunds once
        r2 = pay.refund.apply(total_fee=100, refund_fee=60, out_refund_no=second,
                              transaction_id=transaction_id, notify_url=sink.url)
        assert r2["result_code"] == "SUCCESS"
        with pytest.raises(WeChatPayException) as err:
            pay.refund.apply(total_fee=100, refund_fee=1, out_refund_no="C" + out_trade_no,
                             out_trade_no=out_trade_no)
        assert (err.value.errcode, err.value.errmsg) == ("ERROR", "订单已全额退款")
        assert sink.wait(2), sink.bodies
        notes = [pay.parse_refund_notify_result(body) for body in sink.bodies[:2]]
    assert sorted((n["out_refund_no"], n["refund_fee"], n["refund_status"]) for n in notes) == [
        (first, 40, "SUCCESS"), (second, 60, "SUCCESS")]
    assert all(n["transaction_id"] == transaction_id for n in notes)
    assert pay.order.query(out_trade_no=out_trade_no)["trade_state"] == "REFUND"
    queried = pay.refund.query(out_trade_no=out_trade_no)
    assert (queried["refund_count"], queried["refund_status_0"], queried["refund_status_1"]) \
        == ("2", "SUCCESS", "SUCCESS")
    assert pay.refund.query(refund_id=r2["refund_id"])["out_refund_no_0"] == second
    log = pay._http.get(sim.url + "/sim/requests", timeout=5).json()["requests"]
    prefix = "/sandboxnew" if sandbox else ""
    calls = [e for e in log if e["path"] == prefix + "/secapi/pay/refund"]
    assert calls and all(e["signature"] == "ok" for e in calls)
    return calls


@pytest.mark.parametrize("sandbox", [False, True])
def test_wechatpy_refunds_over_tls_with_the_merchant_certificate(tls_sim, sandbox):
    calls = refund_flow(tls_sim, sandbox, tls_sim.files, tls_sim.files.ca_cert)
    assert all(e["client_cert"] == "CN=" + DEMO_MCH_ID for e in calls)


@pytest.mark.parametrize("sandbox", [False, True])
def test_wechatpy_refunds_over_plain_http(plain_sim, sandbox, tmp_path):
    # wechatpy passes mch_cert/mch_key to requests, which ignores them for http:// URLs.
    calls = refund_flow(plain_sim, sandbox, tls.prepare(str(tmp_path)))
    assert all(e["client_cert"] == "none (plain HTTP)" for e in calls)


def test_wechatpy_without_the_certificate_cannot_refund_over_tls(tls_sim):
    pay = wechatpy(tls_sim, False, ca=tls_sim.files.ca_cert)
    out_trade_no, _ = paid_order(tls_sim, pay)
    with pytest.raises(requests.exceptions.ConnectionError):
        pay.refund.apply(total_fee=100, refund_fee=1, out_refund_no="X" + out_trade_no,
                         out_trade_no=out_trade_no)
    assert pay.order.query(out_trade_no=out_trade_no)["trade_state"] == "SUCCESS"
