"""The v3 client (server/wechat3.py) against the fake v3 WeChat of tests/support/wechat3.py:
its calls, its answers believed only when signed, WeChat's JSON errors, timeouts, and the
platform certificates fetched, kept and refreshed."""
import base64
import json
import os
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from server.config import Config
from server.domain import Order
from server.wechat import UpstreamError, UpstreamTimeout, WeChatRefused
from server.wechat.v3.client import WeChatClientV3
from tests.support.wechat3 import (APPID, MCHID, MERCHANT_PUBLIC_KEY, fake3, key_mode,  # noqa: F401
                                   serial_of, v3_values)

pytestmark = pytest.mark.gen_test(timeout=20)


def client_for(tmp_path, fake, mode="public-key", backoff=0.01, **overrides):
    return WeChatClientV3(Config.from_values(v3_values(tmp_path, fake.url, mode, **overrides)), backoff=backoff)


def order(no="20261202ABCDEF0001", total=2400, created_at=None):
    return Order(out_trade_no=no, openid="o-alice", product_id="coffee", quantity=2, body="Coffee 咖啡", total_fee=total,
                 sign_type="RSA", status="NOTPAY", created_at=time.time() if created_at is None else created_at)


async def test_create_pay_query_close_refund(fake3, tmp_path):
    client = client_for(tmp_path, fake3)
    try:
        prepay_id = await client.prepay(order())
        sent = fake3.orders["20261202ABCDEF0001"]["request"]
        assert sent["amount"] == {"total": 2400, "currency": "CNY"} and sent["payer"] == {"openid": "o-alice"}
        assert sent["notify_url"].endswith("/wechat/pay/v3/notify") and sent["time_expire"].endswith("+08:00")
        assert (sent["appid"], sent["mchid"], sent["description"]) == (APPID, MCHID, "Coffee 咖啡")
        assert await client.prepay(order()) == prepay_id                      # a repeat: the same order at WeChat
        params = client.payment_params(prepay_id, "RSA", 1764650010)
        assert params["signType"] == "RSA" and params["package"] == "prepay_id=" + prepay_id
        MERCHANT_PUBLIC_KEY.verify(base64.b64decode(params["paySign"]), ("%s\n%s\n%s\n%s\n" % (
            APPID, params["timeStamp"], params["nonceStr"], params["package"])).encode(), padding.PKCS1v15(),
            hashes.SHA256())
        assert (await client.order_query("20261202ABCDEF0001"))["trade_state"] == "NOTPAY"
        assert fake3.pay(params)[0] == 200
        trade = await client.order_query("20261202ABCDEF0001")
        assert trade["trade_state"] == "SUCCESS" and trade["total_fee"] == "2400"
        assert trade["time_end"] == "20261202103456" and trade["transaction_id"].startswith("4200001")
        with pytest.raises(WeChatRefused) as info:
            await client.close_order("20261202ABCDEF0001")
        assert info.value.wechat_code == "ORDERPAID"
        with pytest.raises(WeChatRefused) as info:
            await client.order_query("NOSUCHORDER0001")
        assert info.value.wechat_code == "ORDERNOTEXIST"
        answer = await client.refund("RF-1|x", 1000, 2400, out_trade_no="20261202ABCDEF0001", refund_desc="少了",
                                     notify_url="http://127.0.0.1:8000/wechat/refund/v3/notify")
        assert answer["refund_status"] == "PROCESSING" and answer["refund_id"]
        assert fake3.refunds["RF-1|x"]["amount"]["refund"] == 1000
        [found] = await client.refund_query("RF-1|x")
        assert found == {"out_refund_no": "RF-1|x", "refund_id": answer["refund_id"], "refund_fee": 1000,
                         "refund_status": "PROCESSING", "success_time": None}
        assert await client.refund_query("RF-NONE") == []
        await client.prepay(order("20261202ABCDEF0002"))
        assert await client.close_order("20261202ABCDEF0002") is None        # 204
        assert fake3.orders["20261202ABCDEF0002"]["state"] == "CLOSED"
        assert {verdict for _, _, verdict in fake3.requests} == {"ok"}       # every request's signature verified
    finally:
        client.close()


async def test_an_expired_order_is_not_sent_again(fake3, tmp_path):
    client = client_for(tmp_path, fake3)
    try:
        with pytest.raises(WeChatRefused) as info:
            await client.prepay(order(created_at=time.time() - 7200 + 30))
        assert info.value.wechat_code == "ORDER_EXPIRED" and not fake3.requests
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["bad_sign", "unsigned", "stale", "unknown_serial"])
async def test_answers_not_believed_unless_signed_by_wechat(fake3, tmp_path, kind):
    client = client_for(tmp_path, fake3)
    try:
        fake3.fault("/jsapi", kind)
        with pytest.raises(UpstreamError) as info:
            await client.prepay(order())
        assert "not trusted" in str(info.value)
        assert len(fake3.calls("/jsapi")) == 1                               # refused, not retried
        fake3.fault("/close", kind)
        with pytest.raises(UpstreamError):                                   # a 204 must be signed too
            await client.close_order("20261202ABCDEF0001")
    finally:
        client.close()


async def test_an_answer_without_a_signature_type_is_rsa_and_another_type_is_refused(fake3, tmp_path):
    client = client_for(tmp_path, fake3)
    try:
        fake3.fault("/jsapi", "untyped")
        assert await client.prepay(order())                                  # verified as RSA
        fake3.fault("/out-trade-no/", "sm2")
        with pytest.raises(UpstreamError) as info:
            await client.order_query("20261202ABCDEF0001")
        assert "Signature-Type" in str(info.value)
    finally:
        client.close()


async def test_json_errors_mapped(fake3, tmp_path):
    client = client_for(tmp_path, fake3)
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
            fake3.fault("/jsapi", "error", **fault)
            with pytest.raises(error) as info:
                await client.prepay(order())
            assert info.value.wechat_code == code, fault
        fake3.fault("/jsapi", "error", count=2, status=500, code="SYSTEM_ERROR")
        before = len(fake3.calls("/jsapi"))
        assert await client.prepay(order())                                  # retried like v2's SYSTEMERROR
        assert len(fake3.calls("/jsapi")) - before == 3
        fake3.fault("/jsapi", "error", count=3, status=500, code="SYSTEM_ERROR")
        with pytest.raises(UpstreamError):
            await client.prepay(order())
    finally:
        client.close()


async def test_wrong_merchant_key_is_sign_error_and_timeout_is_504(fake3, tmp_path):
    from tests.support.wechat3 import other_key
    from cryptography.hazmat.primitives import serialization
    wrong = tmp_path / "wrong_key.pem"
    wrong.write_bytes(other_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    client = client_for(tmp_path, fake3, mch_private_key_file=str(wrong))
    try:
        with pytest.raises(UpstreamError) as info:
            await client.prepay(order())
        assert info.value.wechat_code == "SIGN_ERROR" and fake3.requests[-1][2] == "signature"
    finally:
        client.close()
    client = client_for(tmp_path, fake3, timeout="0.3")
    try:
        fake3.fault("/out-trade-no/", "latency", seconds=1.0)
        with pytest.raises(UpstreamTimeout):
            await client.order_query("20261202ABCDEF0001")
    finally:
        client.close()


@pytest.mark.parametrize("key_mode", ["certificate"])
async def test_platform_certificates_fetched_kept_and_refreshed_rate_limited(fake3, tmp_path, key_mode):
    client = client_for(tmp_path, fake3, "certificate")
    cert_dir = tmp_path / "platform-certs"
    try:
        assert not client.keys.certificates
        await client.prepay(order())                          # an unknown serial: one fetch, then believed
        assert len(fake3.calls("/v3/certificates")) == 1
        assert os.listdir(cert_dir) == ["%s.pem" % serial_of(fake3.certificate)]
        fake3.fault("/jsapi", "unknown_serial", count=5)
        for _ in range(5):
            with pytest.raises(UpstreamError):
                await client.prepay(order())
        assert len(fake3.calls("/v3/certificates")) == 1     # not again within the minute
    finally:
        client.close()
    restarted = client_for(tmp_path, fake3, "certificate")   # a restart trusts what it kept, without a fetch
    try:
        assert await restarted.order_query("20261202ABCDEF0001")
        assert len(fake3.calls("/v3/certificates")) == 1
        await restarted.start()                               # the periodic refresh fetches at once
        for _ in range(100):
            if len(fake3.calls("/v3/certificates")) == 2:
                break
            await __import__("asyncio").sleep(0.02)
        assert len(fake3.calls("/v3/certificates")) == 2
    finally:
        restarted.close()


@pytest.mark.parametrize("key_mode", ["certificate"])
async def test_certificates_answer_with_a_wrong_apiv3_key_or_signature_is_not_trusted(fake3, tmp_path, key_mode):
    client = client_for(tmp_path, fake3, "certificate", apiv3_key="0" * 32)
    try:
        with pytest.raises(UpstreamError):                    # cannot decrypt them: nothing trusted
            await client.prepay(order())
        assert not client.keys.certificates
    finally:
        client.close()
    client = client_for(tmp_path, fake3, "certificate")
    try:
        fake3.fault("/v3/certificates", "bad_sign")
        assert not await client.refresh_certificates()
        assert not client.keys.certificates and not os.path.exists(tmp_path / "platform-certs")
        assert await client.refresh_certificates()
        assert client.keys.certificates
    finally:
        client.close()


@pytest.mark.parametrize("key_mode", ["migration"])
async def test_migration_trusts_both_kinds_of_serial(fake3, tmp_path, key_mode):
    client = client_for(tmp_path, fake3, "migration")
    try:
        await client.prepay(order())                          # signed by the certificate's serial
        fake3.key_mode = "public-key"
        assert (await client.order_query("20261202ABCDEF0001"))["trade_state"] == "NOTPAY"
        assert len(fake3.calls("/v3/certificates")) == 1
        assert json.loads(json.dumps(client._headers))["Wechatpay-Serial"].startswith("PUB_KEY_ID_")
    finally:
        client.close()
