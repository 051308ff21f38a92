"""Process-level hardening: SIGKILL mid-traffic, graceful SIGTERM, secrets never in logs or answers."""
import signal
import sqlite3
import threading
import time

import pytest
import requests

from tests.support import DEMO
from tests.support.processes import Proc, free_port
from tests.support.shop import Shop, Traffic

pytestmark = pytest.mark.e2e


def db_rows(path, sql, *args):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_sigkill_mid_traffic_then_restart_loses_nothing(tmp_path):
    shop = Shop(tmp_path)
    sim_port = free_port()
    shop.sim = Proc("run_simulator.py", ["--port", str(sim_port), "--time-scale", "0.01"], port=sim_port)
    shop.start_backend()
    try:
        with Traffic(shop) as traffic:
            time.sleep(1.0)
            shop.backend.stop(signal.SIGKILL)
            killed_at = (len(traffic.created), len(traffic.paid))
            time.sleep(0.3)
            shop.start_backend()
            time.sleep(0.5)
        assert killed_at[0] > 5 and traffic.errors > 0, (killed_at, traffic.errors)
        assert db_rows(shop.db, "PRAGMA integrity_check") == [("ok",)]
        stored = {no for (no,) in db_rows(shop.db, "SELECT out_trade_no FROM orders")}
        assert set(traffic.created) <= stored  # every order answered 201 exists
        acknowledged = {n["out_trade_no"] for n in requests.get(shop.sim.url + "/sim/notifications", timeout=5)
                        .json()["notifications"] if n["outcome"] == "success"}
        for no in acknowledged:  # every notification answered SUCCESS is recorded
            assert db_rows(shop.db, "SELECT status FROM orders WHERE out_trade_no = ?", no) == [("SUCCESS",)]
        deadline = time.monotonic() + 20  # the simulator's retries complete the rest
        while True:
            states = dict(db_rows(shop.db, "SELECT out_trade_no, status FROM orders"))
            if all(states.get(no) == "SUCCESS" for no in traffic.paid):
                break
            assert time.monotonic() < deadline, [no for no in traffic.paid if states.get(no) != "SUCCESS"]
            time.sleep(0.2)
        for no, status, txn in db_rows(shop.db, "SELECT out_trade_no, status, transaction_id FROM orders"):
            events = shop.events(no)
            assert events[0] == (None, "NOTPAY", "create")
            assert (status == "SUCCESS") == (txn is not None)
            assert len([e for e in events if e[1] == "SUCCESS"]) == (1 if status == "SUCCESS" else 0)
    finally:
        shop.stop()


def test_sigterm_finishes_in_flight_then_exits_0(tmp_path):
    shop = Shop(tmp_path).start()
    try:
        auth = shop.login()
        assert requests.post(shop.sim.url + "/sim/faults", timeout=5, json={
            "path": "/pay/unifiedorder", "kind": "latency", "value": 1500}).status_code == 201
        result = {}

        def slow_order():
            result["r"] = requests.post(shop.backend.url + "/api/orders", json={"product_id": "tea"},
                                        headers=auth, timeout=10)
        worker = threading.Thread(target=slow_order)
        worker.start()
        time.sleep(0.5)
        shop.backend.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(requests.ConnectionError):  # no longer accepting
            requests.get(shop.backend.url + "/healthz", timeout=2)
        assert shop.backend.proc.poll() is None  # still finishing the order in flight
        worker.join(10)
        assert result["r"].status_code == 201
        assert shop.backend.wait(10) == 0
        no = result["r"].json()["out_trade_no"]
        assert db_rows(shop.db, "SELECT prepay_id IS NOT NULL FROM orders WHERE out_trade_no = ?", no) == [(1,)]
        assert "stopped" in shop.backend.output()
    finally:
        shop.stop()


def test_secrets_never_in_logs_or_answers(tmp_path):
    port, sim_port = free_port(), free_port()
    db = str(tmp_path / "secrets.db")
    answers = []

    def call(method, url, **kw):
        r = requests.request(method, url, timeout=10, verify=str(tmp_path / "tls" / "ca.pem"), **kw)
        answers.append(r.text)
        return r
    with Proc("run_server.py", ["--simulator", "--port", str(port), "--simulator-port", str(sim_port),
                                "--database-url", "sqlite:///" + db, "--time-scale", "0.01",
                                "--simulator-tls-dir", str(tmp_path / "tls")],
              env={"LOG_LEVEL": "DEBUG"}, port=port) as server:
        sim = "https://127.0.0.1:%d" % sim_port
        codes = [call("POST", sim + "/sim/login", json={"user": "u%d" % i}).json()["code"] for i in range(3)]
        token = call("POST", server.url + "/api/login", json={"code": codes[0]}).json()["token"]
        call("POST", server.url + "/api/login", json={"code": codes[0]})  # reused: 401
        auth = {"Authorization": "Bearer " + token}
        order = call("POST", server.url + "/api/orders", json={"product_id": "cake"}, headers=auth).json()
        call("POST", server.url + "/api/orders", json={"product_id": "tea", "code": codes[1]})
        for mode in ("bad_sign", "wrong_amount"):
            call("POST", sim + "/sim/orders/%s/notify" % order["out_trade_no"], json={"mode": mode})
        call("POST", sim + "/sim/pay", json=dict(order["payment"], appid=DEMO["appid"]))
        time.sleep(0.5)
        call("GET", server.url + "/api/orders/%s?refresh=1" % order["out_trade_no"], headers=auth)
        call("POST", sim + "/sim/faults", json={"path": "/pay/unifiedorder", "kind": "bad_sign"})
        call("POST", server.url + "/api/orders", json={"product_id": "tea"}, headers=auth)
        call("POST", sim + "/sim/faults", json={"path": "/sns/jscode2session", "kind": "malformed"})
        call("POST", server.url + "/api/login", json={"code": codes[2]})
        call("POST", server.url + "/wechat/pay/notify", data=b"<xml><a>1</a></xml>")
        server.stop()
        log = server.output()
    session_keys = [k for (k,) in db_rows(db, "SELECT session_key FROM sessions")]
    assert len(session_keys) == 1 and "order" in log and "refused" in log
    for secret in [DEMO["api_key"], DEMO["app_secret"]] + session_keys:
        assert secret not in log
        assert not any(secret in a for a in answers)
    assert token not in log  # the session token is a credential too
