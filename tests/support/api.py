"""Helpers of the in-process tests: the backend's API and the simulator's phone, over HTTP."""
import asyncio
import json

from server.wechat.v2 import wire as wxpay
from server.domain import SUCCESS
from tests.support import DEMO


async def call(http_client, method, url, body=None, headers=None, raw=None):
    """(status, JSON answer) of one request; never raises on HTTP errors."""
    payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
    if payload is None and method == "POST":
        payload = b""
    r = await http_client.fetch(url, method=method, body=payload, headers=headers, raise_error=False)
    return r.code, json.loads(r.body) if r.body else None


async def wx_login(http_client, sim, user="alice"):
    status, data = await call(http_client, "POST", sim.url + "/sim/login", {"appid": DEMO["appid"], "user": user})
    assert status == 200, data
    return data["code"]


async def login(http_client, base_url, sim, user="alice"):
    status, data = await call(http_client, "POST", base_url + "/api/login",
                              {"code": await wx_login(http_client, sim, user)})
    assert status == 200, data
    return {"Authorization": "Bearer " + data["token"]}


async def create(http_client, base_url, auth, body=None, headers=None):
    status, data = await call(http_client, "POST", base_url + "/api/orders",
                              body or {"product_id": "coffee"}, dict(auth, **(headers or {})))
    assert status == 201, data
    return data


async def pay(http_client, sim, payment, result=None):
    body = dict(payment, appid=DEMO["appid"], **({"result": result} if result else {}))
    return await call(http_client, "POST", sim.url + "/sim/pay", body)


async def wait_for(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def paid_in_store(app, no):
    async def check():
        return (await app.service.store.get_order(no)).status == SUCCESS
    await wait_for(check)


def notification(order, **overrides):
    fields = {"return_code": "SUCCESS", "appid": DEMO["appid"], "mch_id": DEMO["mch_id"],
              "nonce_str": wxpay.nonce(), "result_code": "SUCCESS", "openid": "o" * 28,
              "trade_type": "JSAPI", "bank_type": "CMC", "total_fee": str(order["total_fee"]),
              "cash_fee": str(order["total_fee"]), "fee_type": "CNY",
              "transaction_id": "4200001234202611260000000001", "out_trade_no": order["out_trade_no"],
              "time_end": "20261126120000"}
    fields.update(overrides)
    return fields


async def post_notify(http_client, base_url, body):
    r = await http_client.fetch(base_url + "/wechat/pay/notify", method="POST", body=body, raise_error=False)
    return r.code, wxpay.from_xml(r.body)


async def unpaid_order(http_client, base_url, sim):
    return await create(http_client, base_url, await login(http_client, base_url, sim))


def signed(fields, key=DEMO["api_key"], sign_type="MD5"):
    return wxpay.signed_xml(fields, key, sign_type)
