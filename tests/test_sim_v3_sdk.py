"""The unmodified wechatpayv3 SDK (pinned 2.0.4) against a real run_simulator.py, configured
from the manifest v3.json the simulator writes (its generated demo merchant key): create a
JSAPI order, query it both ways, close one, pay one on the phone (paySign by the SDK's sign),
refund and query the refund; the SDK's own callback() accepts the simulator's notifications
and refuses its probes and forgeries. In public-key, certificate and migration mode."""
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import requests
from wechatpayv3 import WeChatPay, WeChatPayType

from tests.support.processes import ROOT
from tests.support.sim import simulator_process
from tests.support.sim3 import V3Sink

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["public-key", "certificate", "migration"])
def sim(request, tmp_path):
    with v3_simulator(tmp_path, request.param) as proc:
        yield proc


@pytest.fixture(scope="module", params=["public-key", "certificate"])
def kinds_sim(request, tmp_path_factory):
    """One simulator per key mode for the three kinds (each test uses its own out_trade_no)."""
    with v3_simulator(tmp_path_factory.mktemp("kinds"), request.param) as proc:
        yield proc


@contextlib.contextmanager
def v3_simulator(tmp_path, mode):
    """A real run_simulator.py in this key mode, with its manifest as .manifest."""
    with simulator_process("v3 manifest", "--v3-dir", str(tmp_path / "sim-v3"),
                           "--v3-key-mode", mode) as proc:
        with open(tmp_path / "sim-v3" / "v3.json", encoding="utf-8") as f:
            proc.manifest = json.load(f)
        proc.mode = mode
        yield proc


def sdk(sim, notify_url, wechatpay_type=WeChatPayType.MINIPROG):
    """WeChatPay configured as a backend would be from the manifest, pointed at the
    simulator (pay._core._gate_way: the SDK has no base-URL option)."""
    m = sim.manifest
    with open(m["merchant_private_key_file"], encoding="utf-8") as f:
        private_key = f.read()
    options = dict(wechatpay_type=wechatpay_type, mchid=m["mchid"],
                   private_key=private_key, cert_serial_no=m["merchant_serial_no"],
                   apiv3_key=m["apiv3_key"], appid=m["appid"], notify_url=notify_url,
                   timeout=(5, 10))
    if sim.mode == "certificate":
        # the SDK reads *.pem from cert_dir; finding none it would fetch from the real host
        options["cert_dir"] = os.path.dirname(m["platform_certificate_file"])
    else:
        with open(m["wechatpay_public_key_file"], encoding="utf-8") as f:
            options.update(public_key=f.read(), public_key_id=m["wechatpay_public_key_id"])
    pay = WeChatPay(**options)
    pay._core._gate_way = sim.url
    return pay


def accepted(pay, headers, body):
    """What the SDK's callback made of a notification: the decrypted resource, or None when
    it refused it (returned None or raised)."""
    try:
        result = pay.callback(headers, body)
    except Exception:       # e.g. int('0xPUB_KEY_ID_...', 16) for an unknown public key id
        return None
    return result and result["resource"]


def ok(result):
    code, text = result
    assert 200 <= code < 300, (code, text)
    return json.loads(text) if text else None


def test_wechatpayv3_sdk_end_to_end(sim):
    session = requests.Session()
    session.trust_env = False
    openid = session.post(sim.url + "/sim/login", json={"user": "sdk"}, timeout=5).json()["openid"]
    with V3Sink() as sink:
        pay = sdk(sim, sink.url)
        paid_no, closed_no = ("SDK" + uuid.uuid4().hex[:12] for _ in range(2))
        prepay_id = ok(pay.pay(description="Coffee", out_trade_no=paid_no,
                               amount={"total": 100, "currency": "CNY"},
                               payer={"openid": openid}))["prepay_id"]
        assert ok(pay.query(out_trade_no=paid_no))["trade_state"] == "NOTPAY"

        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex
        package = "prepay_id=" + prepay_id
        pay_sign = pay.sign([sim.manifest["appid"], timestamp, nonce, package])
        phone = session.post(sim.url + "/sim/pay", timeout=5, json={
            "appid": sim.manifest["appid"], "timeStamp": timestamp, "nonceStr": nonce,
            "package": package, "signType": "RSA", "paySign": pay_sign})
        assert phone.status_code == 200, phone.text
        transaction_id = phone.json()["transaction_id"]
        headers, body = sink.wait(lambda h, b: json.loads(b)["event_type"] ==
                                  "TRANSACTION.SUCCESS")
        note = accepted(pay, headers, body)
        assert note and (note["out_trade_no"], note["transaction_id"]) == (paid_no,
                                                                           transaction_id)
        assert note["trade_state"] == "SUCCESS" and note["amount"]["total"] == 100
        by_id = ok(pay.query(transaction_id=transaction_id))
        assert (by_id["trade_state"], by_id["out_trade_no"]) == ("SUCCESS", paid_no)

        ok(pay.pay(description="Tea", out_trade_no=closed_no, amount={"total": 50},
                   payer={"openid": openid}))
        # text, not bytes: the 204 says Content-Type: application/json, as WeChat's does
        assert pay.close(out_trade_no=closed_no) == (204, "")
        assert ok(pay.query(out_trade_no=closed_no))["trade_state"] == "CLOSED"

        refund = ok(pay.refund(out_refund_no="R" + paid_no, out_trade_no=paid_no,
                               amount={"refund": 40, "total": 100, "currency": "CNY"},
                               notify_url=sink.url))
        assert refund["status"] in ("PROCESSING", "SUCCESS")
        headers, body = sink.wait(lambda h, b: json.loads(b)["event_type"] == "REFUND.SUCCESS")
        note = accepted(pay, headers, body)
        assert note and (note["out_refund_no"], note["refund_status"]) == ("R" + paid_no,
                                                                           "SUCCESS")
        assert ok(pay.query_refund(out_refund_no="R" + paid_no))["status"] == "SUCCESS"

        # the probes and forgeries: each sent once, fetched by its notification record
        verdicts = {}
        for mode in ("signtest", "wrong_serial", "bad_sign", "stale_timestamp", "wrong_amount"):
            before = len(sink.received)
            r = session.post("%s/sim/orders/%s/notify" % (sim.url, paid_no),
                             json={"mode": mode}, timeout=10)
            assert r.status_code == 200, r.text
            headers, body = sink.received[before]
            verdicts[mode] = (headers, accepted(pay, headers, body))
    for mode in ("signtest", "wrong_serial", "bad_sign"):
        assert verdicts[mode][1] is None, mode                  # refused by the SDK
    # Accepted by the SDK, which checks neither the timestamp nor the amount: the receiver's
    # own checks must refuse these two (Wechatpay-Timestamp over 5 minutes old; the amount
    # against the order). The simulator's side of it: genuinely signed, as intended.
    headers, stale = verdicts["stale_timestamp"]
    assert stale is not None and time.time() - int(headers["Wechatpay-Timestamp"]) > 300
    assert verdicts["wrong_amount"][1]["amount"]["total"] == 101
    log = session.get(sim.url + "/sim/requests", timeout=5).json()["requests"]
    v3_calls = [r for r in log if r["api"].startswith("/v3/")]
    assert v3_calls and all(r["signature"] == "ok" for r in v3_calls)
    # migration: answers are signed with the key the request's Wechatpay-Serial names, and
    # the SDK names its public key id in every request
    serials = {r.get("wechatpay_serial", "")[:11] for r in v3_calls}
    want = {"public-key": {"PUB_KEY_ID_"}, "certificate": {sim.manifest["platform_serial_no"][:11]},
            "migration": {"PUB_KEY_ID_"}}[sim.mode]
    assert serials == want


@pytest.mark.parametrize("kind", [WeChatPayType.NATIVE, WeChatPayType.APP, WeChatPayType.H5])
def test_native_app_and_h5_orders_with_the_sdk(kinds_sim, kind):
    """Created by the SDK, paid on the phone (/sim/pay: the code_url, the h5_url, or the App's
    call signed by the SDK's sign), SUCCESS in the SDK's query, the notification accepted by
    its callback(), a refund."""
    session = requests.Session()
    session.trust_env = False
    with V3Sink() as sink:
        pay = sdk(kinds_sim, sink.url, kind)
        no = "SDK" + uuid.uuid4().hex[:12]
        scene = {"payer_client_ip": "203.0.113.7", "h5_info": {"type": "Wap"}}
        created = ok(pay.pay(description="Coffee", out_trade_no=no, amount={"total": 100},
                             scene_info=scene if kind == WeChatPayType.H5 else None))
        if kind == WeChatPayType.NATIVE:
            phone = {"code_url": created["code_url"]}
        elif kind == WeChatPayType.H5:
            phone = {"h5_url": created["h5_url"]}
        else:
            m, timestamp, nonce = kinds_sim.manifest, str(int(time.time())), uuid.uuid4().hex
            phone = {"appid": m["appid"], "partnerid": m["mchid"],
                     "prepayid": created["prepay_id"], "package": "Sign=WXPay",
                     "noncestr": nonce, "timestamp": timestamp,
                     "sign": pay.sign([m["appid"], timestamp, nonce, created["prepay_id"]])}
        r = session.post(kinds_sim.url + "/sim/pay", json=phone, timeout=5)
        assert r.status_code == 200, r.text
        trade_type = {WeChatPayType.NATIVE: "NATIVE", WeChatPayType.APP: "APP",
                      WeChatPayType.H5: "MWEB"}[kind]
        tx = ok(pay.query(out_trade_no=no))
        assert (tx["trade_state"], tx["trade_type"], tx["transaction_id"]) == (
            "SUCCESS", trade_type, r.json()["transaction_id"])
        headers, body = sink.wait(lambda h, b: json.loads(b)["event_type"] ==
                                  "TRANSACTION.SUCCESS")
        note = accepted(pay, headers, body)
        assert note and (note["out_trade_no"], note["trade_type"]) == (no, trade_type)
        refund = ok(pay.refund(out_refund_no="R" + no, out_trade_no=no,
                               amount={"refund": 100, "total": 100, "currency": "CNY"}))
        assert refund["status"] in ("PROCESSING", "SUCCESS")


def test_start_up_banner_manifest_and_bad_v3_flags(tmp_path):
    directory = tmp_path / "v3"
    with simulator_process("v3 manifest", "--v3-dir", str(directory)) as proc:
        output = proc.output()
        with open(directory / "v3.json", encoding="utf-8") as f:
            manifest = json.load(f)
        keys = requests.get(proc.url + "/sim/v3/keys", timeout=5).json()
    assert sorted(manifest) == sorted([
        "mchid", "appid", "apiv3_key", "merchant_serial_no", "merchant_private_key_file",
        "merchant_certificate_file", "key_mode", "wechatpay_public_key_id",
        "wechatpay_public_key_file", "platform_serial_no", "platform_certificate_file"])
    for name in ("merchant_private_key_file", "wechatpay_public_key_file",
                 "platform_certificate_file"):
        assert os.path.isabs(manifest[name]) and manifest[name] in output
    assert manifest["key_mode"] == "public-key" and keys["key_mode"] == "public-key"
    assert manifest["merchant_serial_no"] in output and "PRIVATE" not in json.dumps(keys)
    assert oct(os.stat(directory / "v3.json").st_mode)[-3:] == "600"
    bad = [["--v3-merchant-serial", "ABC"], ["--apiv3-key", "short"],
           ["--v3-merchant-cert", str(tmp_path / "missing.pem")], ["--v3-key-mode", "both"]]
    for args in bad:
        done = subprocess.run([sys.executable, os.path.join(ROOT, "run_simulator.py"),
                               "--port", "0", "--v3-dir", str(directory), *args],
                              capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("run_simulator.py: error: ")
