"""WeChat Pay v3 end to end: run_simulator.py (its own v3 code and keys) and run_server.py (its
own v3 code) as real processes, the backend configured from the simulator's manifest v3.json.
The v2 scenarios again: buy, cancel and pay again, close, lost notifications recovered by
query, duplicate and forged notifications, refunds with their notifications (SUCCESS, CLOSED,
ABNORMAL), SIGKILL under load; the buy in certificate and migration mode; and
run_server.py --simulator --pay-version v3 with the demo Mini Program purchase."""
import json
import os
import signal
import time

import pytest
import requests

from tests.support.processes import Proc, free_port
from tests.support.shop import Traffic, V3Shop

pytestmark = pytest.mark.e2e

FORGED = ("bad_sign", "wrong_amount", "signtest", "stale_timestamp", "wrong_serial")
REFUSED_WITH = {"wrong_amount": 400}    # content that does not match the order; the rest: 401


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    s = V3Shop(tmp_path_factory.mktemp("e2e-v3")).start()
    yield s
    s.stop()
    # neither the APIv3 key nor the merchant's private key is ever logged by the backend
    with open(s.manifest["merchant_private_key_file"], encoding="ascii") as f:
        key_line = f.read().splitlines()[1]
    assert s.manifest["apiv3_key"] not in s.backend.output() and key_line not in s.backend.output()


def v3_requests(shop):
    return [e for e in shop.simulator("GET", "/sim/requests")["requests"] if e["api"].startswith("/v3/")]


def refused(attempts, mode):
    """Every attempt of a forged notification refused by the backend, with its status."""
    return attempts and all(a["outcome"] != "success" and a["status"] == REFUSED_WITH.get(mode, 401)
                            for a in attempts)


def test_buy(shop):
    auth = shop.login()
    order = shop.create(auth, {"product_id": "cake", "quantity": 3})
    no, payment = order["out_trade_no"], order["payment"]
    assert order["total_fee"] == 7800 and sorted(payment) == ["nonceStr", "package", "paySign", "signType",
                                                               "timeStamp"]
    assert payment["signType"] == "RSA" and payment["package"].startswith("prepay_id=")
    paid = shop.pay(payment)            # the phone checks the RSA paySign with the merchant's key
    assert paid.status_code == 200 and paid.json()["errMsg"] == "requestPayment:ok", paid.text
    view = shop.wait_status(auth, no, "SUCCESS")
    assert view["transaction_id"] == paid.json()["transaction_id"] and view["paid_at"]
    assert shop.events(no) == [(None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "notify")]
    [note] = shop.notifications(no)
    assert (note["event_type"], note["outcome"], note["status"]) == ("TRANSACTION.SUCCESS", "success", 200)
    sim_order = shop.simulator("GET", "/sim/orders/" + no)
    assert (sim_order["api"], sim_order["sign_type"], sim_order["total_fee"]) == ("v3", "RSA", 7800)
    assert sim_order["notify_url"] == shop.backend.url + "/wechat/pay/v3/notify"
    calls = v3_requests(shop)       # every v3 call the backend made passed the simulator's checks
    assert calls and all(c["signature"] == "ok" and c["status"] < 300 for c in calls), calls


def test_cancel_then_pay_again(shop):
    auth = shop.login("bob")
    order = shop.create(auth)
    no = order["out_trade_no"]
    cancelled = shop.pay(dict(order["payment"], result="CANCEL"))
    assert cancelled.json()["errMsg"] == "requestPayment:fail cancel"
    assert shop.order(auth, no, refresh=True).json()["status"] == "NOTPAY"     # v3 query: NOTPAY
    again = requests.post(shop.backend.url + "/api/orders/%s/payment" % no, headers=auth, timeout=10)
    assert again.status_code == 200 and again.json()["payment"]["package"] == order["payment"]["package"]
    assert shop.pay(again.json()["payment"]).status_code == 200
    shop.wait_status(auth, no, "SUCCESS")
    assert shop.events(no) == [(None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "notify")]


def test_close(shop):
    auth = shop.login("carol")
    order = shop.create(auth)
    no = order["out_trade_no"]
    r = requests.post(shop.backend.url + "/api/orders/%s/close" % no, headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "CLOSED", r.text
    assert shop.simulator("GET", "/sim/orders/" + no)["trade_state"] == "CLOSED"
    assert shop.pay(order["payment"]).status_code == 409
    r = requests.post(shop.backend.url + "/api/orders/%s/payment" % no, headers=auth, timeout=10)
    assert r.status_code == 409
    assert shop.events(no) == [(None, "NOTPAY", "create"), ("NOTPAY", "CLOSED", "close")]
    close_calls = [c for c in v3_requests(shop) if c["api"].endswith("/close") and c.get("out_trade_no") == no]
    assert [c["status"] for c in close_calls] == [204]


def test_an_answer_not_believed_then_the_same_order_again(shop):
    """WeChat made the order but its answer's signature does not verify: 502, nothing believed.
    The Mini Program's retry (the same Idempotency-Key) sends the same out_trade_no with the
    same fields, time_expire included, which WeChat answers with the same prepay_id; a
    SYSTEM_ERROR on the way is retried by the backend."""
    auth = dict(shop.login("gina"), **{"Idempotency-Key": "e2e-v3-untrusted"})
    fault = {"path": "/v3/pay/transactions/jsapi", "count": 1}
    shop.simulator("POST", "/sim/faults", json=dict(fault, kind="bad_sign"))
    r = requests.post(shop.backend.url + "/api/orders", json={"product_id": "tea"}, headers=auth, timeout=10)
    assert r.status_code == 502 and r.json()["error"]["code"] == "UPSTREAM_ERROR", r.text
    [no] = [n for (n,) in shop.rows("SELECT out_trade_no FROM orders WHERE idempotency_key = ?", "e2e-v3-untrusted")]
    shop.simulator("POST", "/sim/faults", json=dict(fault, kind="system_error"))
    r = requests.post(shop.backend.url + "/api/orders", json={"product_id": "tea"}, headers=auth, timeout=10)
    assert r.status_code == 201 and r.json()["out_trade_no"] == no, r.text
    sim_order = shop.simulator("GET", "/sim/orders/" + no)
    assert r.json()["payment"]["package"] == "prepay_id=" + sim_order["prepay_id"]
    creates = [(c["status"], c["faults"], c.get("out_trade_no")) for c in v3_requests(shop)
               if c["api"] == "/v3/pay/transactions/jsapi"][-3:]
    assert creates == [(200, ["bad_sign"], no), (500, ["system_error"], None), (200, [], no)], creates
    assert shop.pay(r.json()["payment"]).status_code == 200
    shop.wait_status(auth, no, "SUCCESS")


def test_duplicate_and_forged_notifications(shop):
    auth = shop.login("dave")
    order = shop.create(auth)
    no = order["out_trade_no"]
    for mode in FORGED:     # about an unpaid order: each claims it was paid
        attempts = shop.resend(no, mode)
        assert refused(attempts, mode), (mode, attempts)
    assert shop.order(auth, no).json()["status"] == "NOTPAY"
    assert shop.pay(order["payment"]).status_code == 200
    shop.wait_status(auth, no, "SUCCESS")
    genuine = shop.resend(no, "duplicate", 5) + shop.resend(no, "normal")
    assert len(genuine) == 6 and all(a["status"] == 200 and a["outcome"] == "success" for a in genuine)
    assert len({a["notify_id"] for a in genuine}) == 1
    for mode in FORGED:     # about the paid order
        attempts = shop.resend(no, mode)
        assert refused(attempts, mode), (mode, attempts)
    assert shop.events(no) == [(None, "NOTPAY", "create"), ("NOTPAY", "SUCCESS", "notify")]


def test_refunds_and_their_notifications(shop):
    auth, no, _ = shop.paid_order("erin")
    first = shop.refund(no, {"refund_fee": 600, "reason": "damaged"})
    assert first.status_code == 202 and first.json()["status"] == "PROCESSING", first.text
    rno = first.json()["out_refund_no"]
    shop.wait_refund(no, rno, "SUCCESS")
    assert [e for e in shop.refund_events(rno) if e[1] == "SUCCESS"] == [("PROCESSING", "SUCCESS", "notify")]
    sim_refund = shop.simulator("GET", "/sim/refunds/" + rno)
    assert sim_refund["api"] == "v3" and sim_refund["notify_url"] == shop.backend.url + "/wechat/refund/v3/notify"
    genuine = shop.resend(rno, "duplicate", 3, kind="refunds")
    assert len(genuine) == 3 and all(a["status"] == 200 for a in genuine)
    for mode in FORGED:
        attempts = shop.resend(rno, mode, kind="refunds")
        assert refused(attempts, mode), (mode, attempts)
    assert [e[1] for e in shop.refund_events(rno)] == ["PENDING", "PROCESSING", "SUCCESS"]
    # the payment's notification again, about the order now partly refunded
    assert [a["status"] for a in shop.resend(no, "normal")] == [200]
    for mode in FORGED:
        attempts = shop.resend(no, mode)
        assert refused(attempts, mode), (mode, attempts)
    # WeChat closes one refund, another ends ABNORMAL: REFUND.CLOSED and REFUND.ABNORMAL
    for outcome, event in (("REFUNDCLOSE", "REFUND.CLOSED"), ("CHANGE", "REFUND.ABNORMAL")):
        shop.simulator("POST", "/sim/orders/%s/refund-outcome" % no, json={"status": outcome})
        r = shop.refund(no, {"refund_fee": 100})
        assert r.status_code == 202, r.text
        shop.wait_refund(no, r.json()["out_refund_no"], outcome)
        assert shop.refund_events(r.json()["out_refund_no"])[-1] == ("PROCESSING", outcome, "notify")
        notes = [n for n in shop.notifications(no) if n.get("out_refund_no") == r.json()["out_refund_no"]]
        assert [(n["event_type"], n["outcome"]) for n in notes] == [(event, "success")]
    view = shop.order(auth, no).json()
    assert view["status"] == "REFUND" and view["refunded_fee"] == 600
    admin = shop.admin(no)      # a closed refund frees its amount, an abnormal one holds it
    assert admin["refundable_fee"] == 2600 - 600 - 100


def test_lost_notifications_recovered_by_query(shop, tmp_path):
    """A backend WeChat cannot reach (its notify URL goes nowhere): a paid order is found by
    ?refresh=1 (v3 query), a paid order the user then closes by close's ORDERPAID, and a
    refund by the admin API's ?refresh=1 (v3 refund query)."""
    nowhere = "http://127.0.0.1:%d/wechat/pay/v3/notify" % free_port()
    lost = V3Shop(tmp_path, name="lost", notify_url=nowhere).start(sim=shop)
    try:
        auth = lost.login("frank")
        orders = [lost.create(auth) for _ in range(2)]
        paid = [lost.pay(o["payment"]).json() for o in orders]
        nos = [o["out_trade_no"] for o in orders]
        deadline = time.monotonic() + 10
        while not all(any(n["outcome"] in ("error", "fail") for n in lost.notifications(no)) for no in nos):
            assert time.monotonic() < deadline, [lost.notifications(no) for no in nos]
            time.sleep(0.05)
        assert [lost.order(auth, no).json()["status"] for no in nos] == ["NOTPAY", "NOTPAY"]
        view = lost.order(auth, nos[0], refresh=True).json()
        assert view["status"] == "SUCCESS" and view["transaction_id"] == paid[0]["transaction_id"]
        assert lost.events(nos[0])[-1] == ("NOTPAY", "SUCCESS", "orderquery")
        r = requests.post(lost.backend.url + "/api/orders/%s/close" % nos[1], headers=auth, timeout=10)
        assert r.status_code == 409 and r.json()["error"]["code"] == "ORDER_PAID", r.text
        assert lost.events(nos[1])[-1] == ("NOTPAY", "SUCCESS", "orderquery")
        refund = lost.refund(nos[0], {"refund_fee": 100}).json()
        rno = refund["out_refund_no"]
        deadline = time.monotonic() + 10
        while lost.simulator("GET", "/sim/refunds/" + rno)["refund_status"] != "SUCCESS":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert {r["out_refund_no"]: r["status"] for r in lost.admin(nos[0])["refunds"]} == {rno: "PROCESSING"}
        assert {r["out_refund_no"]: r["status"] for r in lost.admin(nos[0], refresh=True)["refunds"]} == {
            rno: "SUCCESS"}
        assert lost.refund_events(rno)[-1] == ("PROCESSING", "SUCCESS", "refundquery")
    finally:
        lost.stop(own_sim=False)


@pytest.mark.parametrize("key_mode", ["certificate", "migration"])
def test_buy_and_refund_with_platform_certificates(tmp_path, key_mode):
    """The backend starts with an empty certificate directory: it fetches /v3/certificates
    from the simulator (decrypted with the APIv3 key) and verifies answers and notifications
    signed with the platform certificate (migration: the notifications alternate with the
    public key, and the answers are signed with it, the key its Wechatpay-Serial names)."""
    shop = V3Shop(tmp_path, key_mode=key_mode).start()
    try:
        auth, no, _ = shop.paid_order()
        r = shop.refund(no, {"refund_fee": 300})
        assert r.status_code == 202, r.text
        shop.wait_refund(no, r.json()["out_refund_no"], "SUCCESS")
        other = shop.create(auth)
        assert shop.order(auth, other["out_trade_no"], refresh=True).json()["status"] == "NOTPAY"
        serial = shop.manifest["platform_serial_no"]
        assert os.listdir(shop.cert_dir) == [serial + ".pem"]
        calls = v3_requests(shop)
        assert any(c["api"] == "/v3/certificates" and c["status"] == 200 for c in calls)
        assert all(c["signature"] == "ok" and c["status"] < 300 for c in calls), calls
        notes = [n for n in shop.simulator("GET", "/sim/notifications")["notifications"]]
        signers = {c["signed_with"] for c in calls + notes}
        assert signers == ({"certificate"} if key_mode == "certificate" else {"certificate", "public-key"})
        assert [n["outcome"] for n in notes] == ["success", "success"]
        assert shop.events(no)[-1][:2] == ("SUCCESS", "REFUND")
        # an unknown serial makes the backend fetch the certificates again, at most once a minute
        for mode in ("wrong_serial", "wrong_serial", "bad_sign", "stale_timestamp"):
            attempts = shop.resend(no, mode)
            assert refused(attempts, mode), (mode, attempts)
        fetches = [c for c in v3_requests(shop) if c["api"] == "/v3/certificates"]
        assert 1 <= len(fetches) <= 2, fetches
    finally:
        shop.stop()


def test_sigkill_under_load_loses_nothing(shop):
    """Orders created and paid in threads; the backend is killed and started again: every order
    it answered 201 is stored, every notification it acknowledged is recorded, and the
    simulator's retries complete the rest. (Last: it restarts the module's backend.)"""
    with Traffic(shop) as traffic:
        time.sleep(1.0)
        shop.backend.stop(signal.SIGKILL)
        killed_at = (len(traffic.created), len(traffic.paid))
        time.sleep(0.3)
        shop.start_backend()
        time.sleep(0.5)
    assert killed_at[0] > 5 and traffic.errors > 0, (killed_at, traffic.errors)
    assert shop.rows("PRAGMA integrity_check") == [("ok",)]
    stored = {no for (no,) in shop.rows("SELECT out_trade_no FROM orders")}
    assert set(traffic.created) <= stored
    notes = shop.simulator("GET", "/sim/notifications")["notifications"]
    acknowledged = {n["out_trade_no"] for n in notes if n["outcome"] == "success" and n["kind"] == "payment"}
    assert set(traffic.paid) & acknowledged
    for no in acknowledged:
        assert shop.rows("SELECT status FROM orders WHERE out_trade_no = ?", no)[0][0] in ("SUCCESS", "REFUND")
    deadline = time.monotonic() + 30
    while True:
        states = dict(shop.rows("SELECT out_trade_no, status FROM orders"))
        if all(states.get(no) == "SUCCESS" for no in traffic.paid):
            break
        assert time.monotonic() < deadline, [no for no in traffic.paid if states.get(no) != "SUCCESS"]
        time.sleep(0.2)
    for no in traffic.created:
        events = shop.events(no)
        assert events[0] == (None, "NOTPAY", "create")
        assert len([e for e in events if e[1] == "SUCCESS"]) == (1 if no in traffic.paid else 0), events


def test_run_server_simulator_v3(tmp_path):
    """run_server.py --simulator --pay-version v3: the bundled simulator serves v3 with keys it
    makes in --simulator-v3-dir, the backend configures itself from its manifest, and the demo
    purchase (run_simulator.py demo) ends SUCCESS; here in migration mode (both key kinds)."""
    port, sim_port = free_port(), free_port()
    v3_dir, tls_dir = tmp_path / "sim-v3", tmp_path / "tls"
    args = ["--simulator", "--pay-version", "v3", "--simulator-v3-key-mode", "migration",
            "--port", str(port), "--simulator-port", str(sim_port), "--simulator-v3-dir", str(v3_dir),
            "--simulator-tls-dir", str(tls_dir), "--database-url", "sqlite:///%s" % (tmp_path / "q.db")]
    with Proc("run_server.py", args, port=port) as server:
        demo = Proc("run_simulator.py", ["demo", "--backend", server.url, "--ca-file", str(tls_dir / "ca.pem"),
                                         "--simulator", "https://127.0.0.1:%d" % sim_port], wait_port=False)
        assert demo.wait(60) == 0, demo.output() + server.output()
        assert "[6/6]" in demo.output() and "SUCCESS" in demo.output()
        log = requests.get("https://127.0.0.1:%d/sim/requests" % sim_port, verify=str(tls_dir / "ca.pem"),
                           timeout=5).json()["requests"]
        assert server.stop(signal.SIGTERM) == 0
        output = server.output()
    with open(v3_dir / "v3.json", encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["key_mode"] == "migration"
    assert "notify URL http://127.0.0.1:%d/wechat/pay/v3/notify" % port in output
    assert manifest["wechatpay_public_key_id"] in output and manifest["merchant_serial_no"] in output
    v3_calls = [e for e in log if e["api"].startswith("/v3/")]
    assert {e["api"] for e in v3_calls} >= {"/v3/certificates", "/v3/pay/transactions/jsapi"}
    assert all(e["signature"] == "ok" for e in v3_calls)
    assert os.listdir(v3_dir / "backend-platform-certs") == [manifest["platform_serial_no"] + ".pem"]
