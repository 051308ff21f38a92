"""The v3 client (server/wechat/v3/client.py) against the simulator in process (behind the proxy of
tests/support/tamper3.py for the answers the simulator never gives): its calls, its answers
believed only when signed, WeChat's JSON errors, timeouts, and the platform certificates
fetched, kept and refreshed."""
import base64
import dataclasses
import json
import os
import socket
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tornado.httpclient import AsyncHTTPClient

from server.config import Config
from server.domain import PAY_V3, Order
from server.wechat import UpstreamError, UpstreamTimeout, WeChatRefused
from server.wechat.v3.client import WeChatClientV3
from simulator.endpoint import V3_APIS
from simulator.models import openid_for
from simulator.v3 import wire as protocol3
from tests.support.server3 import (APPID, MCHID, MERCHANT_PUBLIC_KEY, key_mode, sim3, sim3_dir,  # noqa: F401
                                   v3_requests, v3_values)
from tests.support.tamper3 import wechat  # noqa: F401

pytestmark = pytest.mark.gen_test(timeout=20)
JSAPI, QUERY, _, CLOSE, _, _, CERTIFICATES = V3_APIS
OPENID = openid_for(APPID, "alice")


def dead_port():
    """A port nothing listens on: where the simulator's notifications go unanswered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_for(tmp_path, wechat, mode="public-key", backoff=0.01, **overrides):
    values = v3_values(tmp_path, wechat.url, mode, dead_port(), **overrides)
    return WeChatClientV3(Config.from_values(values), backoff=backoff)


CREATED_AT = time.time()   # one time for every order(): a repeat must send the same time_expire


def order(no="20261202ABCDEF0001", total=2400, created_at=None):
    return Order(out_trade_no=no, openid=OPENID, product_id="coffee", quantity=2, body="Coffee 咖啡", total_fee=total,
                 sign_type="RSA", pay_version=PAY_V3, status="NOTPAY", created_at=CREATED_AT if created_at is None else created_at)


@pytest.fixture
def wx(wechat):
    """The simulator behind the proxy, alice logged in (her openid issued for APPID)."""
    wechat.sim.state.issue_code(APPID, "alice")
    return wechat.sim


def sim_fault(sim, api, kind, value=None, count=1):
    """A fault rule of the simulator's own (POST /sim/faults) for one v3 API."""
    sim.state.add_fault(api, kind, value, 1.0, count)


def sim_order(sim, no):
    return sim.state.orders[(MCHID, no)]


async def phone_pays(sim, params):
    """wx.requestPayment at the simulator (it checks the RSA paySign): (HTTP status, answer)."""
    answer = await AsyncHTTPClient().fetch(sim.url + "/sim/pay", method="POST", raise_error=False,
                                     body=json.dumps(dict(params, appid=APPID)))
    return answer.code, json.loads(answer.body)


async def test_create_pay_query_close_refund(wechat, wx, tmp_path):
    client = client_for(tmp_path, wechat)
    try:
        prepay_id = await client.prepay(order())
        sent = sim_order(wx, "20261202ABCDEF0001").request
        assert sent["amount"] == {"total": 2400, "currency": "CNY"} and sent["payer"] == {"openid": OPENID}
        assert sent["notify_url"].endswith("/wechat/pay/v3/notify") and sent["time_expire"].endswith("+08:00")
        assert (sent["appid"], sent["mchid"], sent["description"]) == (APPID, MCHID, "Coffee 咖啡")
        assert await client.prepay(order()) == prepay_id                      # a repeat: the same order at WeChat
        params = client.payment_params(prepay_id, order(), 1764650010)
        assert params["signType"] == "RSA" and params["package"] == "prepay_id=" + prepay_id
        MERCHANT_PUBLIC_KEY.verify(base64.b64decode(params["paySign"]), ("%s\n%s\n%s\n%s\n" % (
            APPID, params["timeStamp"], params["nonceStr"], params["package"])).encode(), padding.PKCS1v15(),
            hashes.SHA256())
        assert (await client.order_query("20261202ABCDEF0001"))["trade_state"] == "NOTPAY"
        assert (await phone_pays(wx, params))[0] == 200
        trade = await client.order_query("20261202ABCDEF0001")
        assert trade["trade_state"] == "SUCCESS" and trade["total_fee"] == 2400
        paid = sim_order(wx, "20261202ABCDEF0001")
        assert trade["time_end"] == paid.time_end and trade["transaction_id"] == paid.transaction_id
        with pytest.raises(WeChatRefused) as info:
            await client.close_order("20261202ABCDEF0001")
        assert info.value.wechat_code == "ORDERPAID"
        with pytest.raises(WeChatRefused) as info:
            await client.order_query("NOSUCHORDER0001")
        assert info.value.wechat_code == "ORDERNOTEXIST"
        answer = await client.refund("RF-1|x", 1000, 2400, out_trade_no="20261202ABCDEF0001", refund_desc="少了",
                                     notify_url="http://127.0.0.1:%d/wechat/refund/v3/notify" % dead_port())
        assert answer["refund_status"] == "PROCESSING" and answer["refund_id"]
        assert wx.state.refunds[(MCHID, "RF-1|x")].refund_fee == 1000
        [found] = await client.refund_query("RF-1|x")
        assert found == {"out_refund_no": "RF-1|x", "refund_id": answer["refund_id"], "refund_fee": 1000,
                         "refund_status": "PROCESSING", "success_time": None}
        assert await client.refund_query("RF-NONE") == []
        await client.prepay(order("20261202ABCDEF0002"))
        assert await client.close_order("20261202ABCDEF0002") is None        # 204
        assert sim_order(wx, "20261202ABCDEF0002").trade_state == "CLOSED"
        assert {e["signature"] for e in v3_requests(wx.state)} == {"ok"}   # every request's signature verified
    finally:
        client.close()


async def test_an_expired_order_is_not_sent_again(wechat, wx, tmp_path):
    client = client_for(tmp_path, wechat)
    try:
        with pytest.raises(WeChatRefused) as info:
            await client.prepay(order(created_at=time.time() - 7200 + 30))
        assert info.value.wechat_code == "ORDER_EXPIRED" and not v3_requests(wx.state)
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["bad_sign", "unsigned", "stale", "unknown_serial"])
async def test_answers_not_believed_unless_signed_by_wechat(wechat, wx, tmp_path, kind):
    def spoil(api, fragment):        # the simulator's own fault where it has one, else the proxy's
        sim_fault(wx, api, kind) if kind == "bad_sign" else wechat.fault(fragment, kind)
    client = client_for(tmp_path, wechat)
    try:
        spoil(JSAPI, "/jsapi")
        with pytest.raises(UpstreamError) as info:
            await client.prepay(order())
        assert "not trusted" in str(info.value)
        assert len(v3_requests(wx.state, "/jsapi")) == 1                    # refused, not retried
        spoil(CLOSE, "/close")
        with pytest.raises(UpstreamError):                                   # a 204 must be signed too
            await client.close_order("20261202ABCDEF0001")
    finally:
        client.close()


async def test_an_answer_without_a_signature_type_is_rsa_and_another_type_is_refused(wechat, wx, tmp_path):
    client = client_for(tmp_path, wechat)
    try:
        wechat.fault("/jsapi", "untyped")
        assert await client.prepay(order())                                  # verified as RSA
        wechat.fault("/out-trade-no/", "sm2")
        with pytest.raises(UpstreamError) as info:
            await client.order_query("20261202ABCDEF0001")
        assert "Signature-Type" in str(info.value)
    finally:
        client.close()


async def test_json_errors_mapped(wechat, wx, tmp_path):
    client = client_for(tmp_path, wechat)
    try:
        cases = [
            (dict(status=400, code="INVALID_REQUEST"), WeChatRefused, "INVALID_REQUEST"),   # signed: a definite no
            (dict(status=400, code="INVALID_REQUEST", signed=False), UpstreamError, "INVALID_REQUEST"),
            (dict(status=403, code="NO_AUTH", signed=False), UpstreamError, "NO_AUTH"),
            (dict(status=429, code="FREQUENCY_LIMITED"), UpstreamError, "FREQUENCY_LIMITED"),
            (dict(status=404, code="ORDER_NOT_EXIST"), WeChatRefused, "ORDERNOTEXIST"),
            (dict(status=502, code="BAD_GATEWAY"), UpstreamError, "BAD_GATEWAY"),
        ]
        for fault, error, code in cases:
            wechat.fault("/jsapi", "error", **fault)
            with pytest.raises(error) as info:
                await client.prepay(order())
            assert info.value.wechat_code == code, fault
        sim_fault(wx, JSAPI, "system_error", count=2)                      # 500 SYSTEM_ERROR, signed
        before = len(v3_requests(wx.state, "/jsapi"))
        assert await client.prepay(order())                                  # retried like v2's SYSTEMERROR
        assert len(v3_requests(wx.state, "/jsapi")) - before == 3
        sim_fault(wx, JSAPI, "system_error", count=3)
        with pytest.raises(UpstreamError):
            await client.prepay(order())
    finally:
        client.close()


async def test_wrong_merchant_key_is_sign_error_and_timeout_is_504(wechat, wx, tmp_path):
    from tests.support.server3 import other_key
    from cryptography.hazmat.primitives import serialization
    wrong = tmp_path / "wrong_key.pem"
    wrong.write_bytes(other_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    client = client_for(tmp_path, wechat, mch_private_key_file=str(wrong))
    try:
        with pytest.raises(UpstreamError) as info:
            await client.prepay(order())
        assert info.value.wechat_code == "SIGN_ERROR"
        assert v3_requests(wx.state)[-1]["explanation"]["failed_check"] == "signature"
        # not WeChat's host: the simulator's request log explains the failure, and the error says where
        assert ("see %s/sim/console (or %s/sim/requests) for the string WeChat signed and why it did not "
                "match" % (wechat.url, wechat.url)) in str(info.value)
    finally:
        client.close()
    client = client_for(tmp_path, wechat, timeout="0.3")
    try:
        sim_fault(wx, QUERY, "latency", 1000)                               # milliseconds
        with pytest.raises(UpstreamTimeout):
            await client.order_query("20261202ABCDEF0001")
    finally:
        client.close()


@pytest.mark.parametrize("key_mode", ["certificate"])
async def test_platform_certificates_fetched_kept_and_refreshed_rate_limited(wechat, wx, tmp_path, key_mode):
    client = client_for(tmp_path, wechat, "certificate")
    cert_dir = tmp_path / "platform-certs"
    try:
        assert not client.keys.certificates
        await client.prepay(order())                          # an unknown serial: one fetch, then believed
        assert len(v3_requests(wx.state, "/v3/certificates")) == 1
        assert os.listdir(cert_dir) == ["%s.pem" % protocol3.serial_hex(wx.state.v3.platform_cert)]
        wechat.fault("/jsapi", "unknown_serial", count=5)
        for _ in range(5):
            with pytest.raises(UpstreamError):
                await client.prepay(order())
        assert len(v3_requests(wx.state, "/v3/certificates")) == 1     # not again within the minute
    finally:
        client.close()
    restarted = client_for(tmp_path, wechat, "certificate")  # a restart trusts what it kept, without a fetch
    try:
        assert await restarted.order_query("20261202ABCDEF0001")
        assert len(v3_requests(wx.state, "/v3/certificates")) == 1
        await restarted.start()                               # the periodic refresh fetches at once
        for _ in range(100):
            if len(v3_requests(wx.state, "/v3/certificates")) == 2:
                break
            await __import__("asyncio").sleep(0.02)
        assert len(v3_requests(wx.state, "/v3/certificates")) == 2
    finally:
        restarted.close()


@pytest.mark.parametrize("key_mode", ["certificate"])
async def test_certificates_answer_with_a_wrong_apiv3_key_or_signature_is_not_trusted(wechat, wx, tmp_path,
                                                                                      key_mode):
    client = client_for(tmp_path, wechat, "certificate", apiv3_key="0" * 32)
    try:
        with pytest.raises(UpstreamError):                    # cannot decrypt them: nothing trusted
            await client.prepay(order())
        assert not client.keys.certificates
    finally:
        client.close()
    client = client_for(tmp_path, wechat, "certificate")
    try:
        sim_fault(wx, CERTIFICATES, "bad_sign")
        assert not await client.refresh_certificates()
        assert not client.keys.certificates and not os.path.exists(tmp_path / "platform-certs")
        assert await client.refresh_certificates()
        assert client.keys.certificates
    finally:
        client.close()


@pytest.mark.parametrize("key_mode", ["migration"])
async def test_migration_trusts_both_kinds_of_serial(wechat, wx, tmp_path, key_mode):
    # WeChat chooses the answers' key during a migration: the certificate first, then the public key
    wx.state.v3 = dataclasses.replace(wx.state.v3, key_mode="certificate")
    client = client_for(tmp_path, wechat, "migration")
    try:
        await client.prepay(order())                          # signed by the certificate's serial
        wx.state.v3 = dataclasses.replace(wx.state.v3, key_mode="public-key")
        assert (await client.order_query("20261202ABCDEF0001"))["trade_state"] == "NOTPAY"
        assert len(v3_requests(wx.state, "/v3/certificates")) == 1
        assert json.loads(json.dumps(client._headers))["Wechatpay-Serial"].startswith("PUB_KEY_ID_")
    finally:
        client.close()
