"""Review of issue 15 (the simulator's API v3): requests WeChat refuses or answers otherwise,
and malformed input that must be a WeChat error, never a 500 "simulator bug"."""
import json

import pytest

from tests.support.sim import login
from tests.support.sim3 import MCHID, authorization, v3_call
from tests.test_sim_v3_api import (JSAPI, app, base, box, error_of, last_request, stranger,  # noqa: F401
                                   order_body, v3_setup)


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("timestamp", ["1" * 5000, "0" * 4301])
async def test_a_huge_authorization_timestamp_is_sign_error_not_a_crash(http_client, base, v3_merchant,
                                                                         timestamp):
    """int() of more than 4300 digits raises ValueError in Python 3.11: the simulator answered
    500 SYSTEM_ERROR and logged "simulator bug" (a client then retries, as for a real 500)."""
    _, openid = await login(http_client, base)
    body = json.dumps(order_body(openid, "HUGETS001", base), separators=(",", ":"))
    resp = await http_client.fetch(base + JSAPI, method="POST", body=body, raise_error=False, headers={
        "Accept": "application/json",
        "Authorization": authorization(v3_merchant, "POST", JSAPI, body, timestamp=timestamp)})
    assert error_of(resp.code, resp.body) == (401, "SIGN_ERROR")
    entry = await last_request(http_client, base)
    assert entry["explanation"]["failed_check"] == "timestamp"


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("time_expire", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
async def test_a_time_expire_outside_the_calendar_is_param_error_not_a_crash(http_client, base, v3_merchant,
                                                                              time_expire):
    """Both match the RFC 3339 pattern and parse, but in Beijing time they are year 0 and year
    10000: models.beijing() raised ValueError in State.v3_order and the answer was 500."""
    _, openid = await login(http_client, base)
    status, _, text = await v3_call(http_client, base, v3_merchant, "POST", JSAPI,
                                    order_body(openid, "EXPIRE001", base, time_expire=time_expire))
    assert error_of(status, text) == (400, "PARAM_ERROR")


def _raw_request(base, method, url, headers):
    """One request with exactly these headers (http.client adds no Accept or User-Agent,
    unlike Tornado's client); (status, headers, text)."""
    import http.client
    import urllib.parse
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request(method, url, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8")
    finally:
        connection.close()


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("missing", ["Accept", "User-Agent"])
async def test_a_request_without_accept_or_user_agent_is_refused(http_client, base, v3_merchant, missing):
    """WeChat answers {"code":"INVALID_REQUEST","message":"Http头缺少Accept或User-Agent"} (HTTP 400)
    to a correctly signed request that lacks either header (developers.weixin.qq.com community
    threads; its basic rules: requests must set Accept: application/json). The simulator
    served it, so a client that forgets them passes here and fails at WeChat."""
    import asyncio
    url = "/v3/pay/transactions/out-trade-no/NOPE0001?mchid=" + MCHID
    headers = {"Accept": "application/json", "User-Agent": "review-15/1.0",
               "Authorization": authorization(v3_merchant, "GET", url, "")}
    del headers[missing]
    status, _, text = await asyncio.get_running_loop().run_in_executor(
        None, _raw_request, base, "GET", url, headers)
    assert error_of(status, text) == (400, "INVALID_REQUEST")


@pytest.mark.gen_test(timeout=15)
async def test_an_answer_to_a_request_whose_signature_failed_is_not_signed(http_client, base, v3_merchant,
                                                                           stranger):
    """WeChat signs the answers of requests whose signature it verified, and only those
    ("对于签名验证成功的请求，微信支付API v3会使用微信支付的平台私钥对应答进行签名", the
    signature rules page); the simulator signed its 401 SIGN_ERROR too, so a client's handling
    of the unsigned 401 it will get from WeChat is never exercised here."""
    url = "/v3/pay/transactions/out-trade-no/NOPE0001?mchid=" + MCHID
    resp = await http_client.fetch(base + url, raise_error=False, headers={
        "Accept": "application/json", "Authorization": authorization(v3_merchant, "GET", url, "", key=stranger)})
    assert error_of(resp.code, resp.body) == (401, "SIGN_ERROR")
    assert "Wechatpay-Signature" not in resp.headers and "Wechatpay-Serial" not in resp.headers
