"""In-process integration: the backend and the simulator on one IOLoop (pytest-tornado)."""
import asyncio

import pytest

from server.domain import CLOSED, NOTPAY, SUCCESS
from tests.support import DEMO
from tests.support.api import call, create, login, paid_in_store, pay, wait_for, wx_login

pytestmark = pytest.mark.gen_test(timeout=20)


@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
async def test_full_flow_to_success(http_client, base_url, sim, app, sign_type):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth, {"product_id": "coffee", "quantity": 2})
    assert order["status"] == NOTPAY and order["total_fee"] == 2400
    payment = order["payment"]
    assert set(payment) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert payment["signType"] == sign_type and payment["package"].startswith("prepay_id=wx")
    assert payment["timeStamp"].isdigit() and len(payment["timeStamp"]) == 10
    status, paid = await pay(http_client, sim, payment)
    assert status == 200 and paid["errMsg"] == "requestPayment:ok"
    await paid_in_store(app, order["out_trade_no"])
    status, view = await call(http_client, "GET", base_url + "/api/orders/" + order["out_trade_no"], headers=auth)
    assert status == 200 and view["status"] == SUCCESS
    assert view["transaction_id"] == paid["transaction_id"] and view["paid_at"].endswith("+08:00")
    stored = await app.service.store.get_order(order["out_trade_no"])
    assert stored.sign_type == sign_type
    assert await app.service.store.events(order["out_trade_no"]) == [
        (None, NOTPAY, "create"), (NOTPAY, SUCCESS, "notify")]


async def test_one_call_flow_with_code(http_client, base_url, sim, app):
    code = await wx_login(http_client, sim, "bob")
    status, order = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea", "code": code})
    assert status == 201 and order["total_fee"] == 800
    status, paid = await pay(http_client, sim, order["payment"])
    assert status == 200
    await paid_in_store(app, order["out_trade_no"])


async def test_client_amount_ignored(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth, {"product_id": "cake", "total_fee": 1, "price": 1, "amount": 1})
    assert order["total_fee"] == 2600
    assert (await app.service.store.get_order(order["out_trade_no"])).total_fee == 2600
    stored = sim.state.find_order(DEMO["mch_id"], order["out_trade_no"])
    assert stored.total_fee == 2600


async def test_other_users_order_is_404_everywhere(http_client, base_url, sim, app):
    alice = await login(http_client, base_url, sim, "alice")
    mallory = await login(http_client, base_url, sim, "mallory")
    no = (await create(http_client, base_url, alice))["out_trade_no"]
    for method, path in (("GET", ""), ("POST", "/payment"), ("POST", "/close")):
        status, data = await call(http_client, method, base_url + "/api/orders/" + no + path, headers=mallory)
        assert status == 404 and data["error"]["code"] == "ORDER_NOT_FOUND"
    assert (await app.service.store.get_order(no)).status == NOTPAY


async def test_reused_and_invalid_codes_are_401_with_wechat_code(http_client, base_url, sim, app):
    code = await wx_login(http_client, sim)
    assert (await call(http_client, "POST", base_url + "/api/login", {"code": code}))[0] == 200
    status, data = await call(http_client, "POST", base_url + "/api/login", {"code": code})
    assert status == 401 and data["error"]["code"] == "LOGIN_FAILED" and data["error"]["wechat_code"] == 40163
    status, data = await call(http_client, "POST", base_url + "/api/login", {"code": "no-such-code"})
    assert status == 401 and data["error"]["wechat_code"] == 40029
    status, data = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea", "code": code})
    assert status == 401 and data["error"]["wechat_code"] == 40163


async def test_login_errors(http_client, base_url, sim, app):
    status, data = await call(http_client, "POST", base_url + "/api/login", {})
    assert status == 400 and data["error"]["code"] == "INVALID_CODE"
    status, data = await call(http_client, "POST", base_url + "/api/login", {"code": "errcode-40226"})
    assert status == 401 and data["error"]["wechat_code"] == 40226
    status, data = await call(http_client, "POST", base_url + "/api/login", {"code": "errcode--1"})
    assert status == 502 and data["error"]["code"] == "UPSTREAM_ERROR"
    status, data = await call(http_client, "GET", base_url + "/api/orders/x", headers={"Authorization": "Bearer nope"})
    assert status == 401 and data["error"]["code"] == "UNAUTHORIZED"


async def test_session_token_is_opaque_and_expires(http_client, base_url, sim, app, clock):
    auth = await login(http_client, base_url, sim)
    token = auth["Authorization"].split()[1]
    assert len(token) >= 43  # 32 random bytes, urlsafe base64
    clock.offset += app.service.config.session_ttl + 1
    status, data = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea"}, auth)
    assert status == 401


async def test_repeated_and_duplicate_notifications_processed_once(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    await pay(http_client, sim, order["payment"])
    await paid_in_store(app, no)
    for mode in ("normal", "duplicate", "normal"):
        status, _ = await call(http_client, "POST", sim.url + "/sim/orders/%s/notify" % no, {"mode": mode})
        assert status == 200
    async def all_answered():
        attempts = [a for a in (await call(http_client, "GET", sim.url + "/sim/notifications"))[1]["notifications"]
                    if a["out_trade_no"] == no]
        return len(attempts) >= 8 and all(a.get("outcome") for a in attempts)
    await wait_for(all_answered)
    _, data = await call(http_client, "GET", sim.url + "/sim/notifications")
    attempts = [a for a in data["notifications"] if a["out_trade_no"] == no]
    assert all(a["outcome"] == "success" for a in attempts), attempts
    assert await app.service.store.events(no) == [(None, NOTPAY, "create"), (NOTPAY, SUCCESS, "notify")]


@pytest.mark.parametrize("mode", ["bad_sign", "wrong_amount"])
async def test_forged_notifications_refused(http_client, base_url, sim, app, mode):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    status, _ = await call(http_client, "POST", sim.url + "/sim/orders/%s/notify" % no, {"mode": mode})
    assert status == 200
    async def answered():
        data = (await call(http_client, "GET", sim.url + "/sim/notifications"))[1]["notifications"]
        return any(a["out_trade_no"] == no and a.get("outcome") for a in data)
    await wait_for(answered)
    _, data = await call(http_client, "GET", sim.url + "/sim/notifications")
    attempt = next(a for a in data["notifications"] if a["out_trade_no"] == no)
    assert attempt["outcome"] != "success"
    stored = await app.service.store.get_order(no)
    assert stored.status == NOTPAY and stored.transaction_id is None
    assert await app.service.store.events(no) == [(None, NOTPAY, "create")]


async def test_lost_notification_recovered_by_orderquery(http_client, base_url, sim, app, clock):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    lost = asyncio.Event()

    async def drop_notification(body):
        lost.set()
        return b"<xml><return_code>FAIL</return_code></xml>"
    real = app.service.handle_notify
    app.service.handle_notify = drop_notification
    try:
        status, paid = await pay(http_client, sim, order["payment"])
        await asyncio.wait_for(lost.wait(), 5)
        status, view = await call(http_client, "GET", base_url + "/api/orders/" + no, headers=auth)
        assert view["status"] == NOTPAY  # young order: no automatic query yet
        status, view = await call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % no, headers=auth)
        assert status == 200 and view["status"] == SUCCESS and view["transaction_id"] == paid["transaction_id"]
    finally:
        app.service.handle_notify = real
    assert (await app.service.store.events(no))[-1] == (NOTPAY, SUCCESS, "orderquery")


async def test_stale_unpaid_order_reconciled_without_asking(http_client, base_url, sim, app, clock):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    app.service.handle_notify = lambda body: asyncio.sleep(0, b"<xml><return_code>FAIL</return_code></xml>")
    await pay(http_client, sim, order["payment"])
    clock.offset += 61
    async def paid():
        return (await call(http_client, "GET", base_url + "/api/orders/" + no, headers=auth))[1]["status"] == SUCCESS
    await wait_for(paid)


async def test_repay_reuses_prepay_then_renews(http_client, base_url, sim, app, clock):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    status, again = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % no, headers=auth)
    assert status == 200 and again["payment"]["package"] == order["payment"]["package"]
    assert again["payment"]["nonceStr"] != order["payment"]["nonceStr"]
    clock.offset += 7200 - 599  # less than the safety margin left on the prepay_id
    await call(http_client, "POST", sim.url + "/sim/clock", {"advance": 7200})
    status, renewed = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % no, headers=auth)
    assert status == 200 and renewed["payment"]["package"] != order["payment"]["package"]
    assert renewed["out_trade_no"] == no
    status, paid = await pay(http_client, sim, renewed["payment"])
    assert status == 200
    await paid_in_store(app, no)
    status, data = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % no, headers=auth)
    assert status == 409


async def test_close_then_paid_close_is_409(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    status, view = await call(http_client, "POST", base_url + "/api/orders/%s/close" % no, headers=auth)
    assert status == 200 and view["status"] == CLOSED
    assert sim.state.find_order(DEMO["mch_id"], no).trade_state == "CLOSED"
    status, _ = await pay(http_client, sim, order["payment"])
    assert status >= 400
    status, data = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % no, headers=auth)
    assert status == 409

    paid_order = await create(http_client, base_url, auth)
    await pay(http_client, sim, paid_order["payment"])
    await paid_in_store(app, paid_order["out_trade_no"])
    status, data = await call(http_client, "POST", base_url + "/api/orders/%s/close" % paid_order["out_trade_no"], headers=auth)
    assert status == 409


async def test_close_when_wechat_says_paid_reconciles_and_409(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    app.service.handle_notify = lambda body: asyncio.sleep(0, b"<xml><return_code>FAIL</return_code></xml>")
    await pay(http_client, sim, order["payment"])
    status, data = await call(http_client, "POST", base_url + "/api/orders/%s/close" % no, headers=auth)
    assert status == 409 and data["error"]["code"] == "ORDER_PAID"
    assert (await app.service.store.get_order(no)).status == SUCCESS


async def test_idempotency_key_returns_same_order(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    key = {"Idempotency-Key": "cart-42"}
    first = await create(http_client, base_url, auth, headers=key)
    second = await create(http_client, base_url, auth, headers=key)
    assert first["out_trade_no"] == second["out_trade_no"]
    assert first["payment"]["package"] == second["payment"]["package"]
    status, data = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea"}, dict(auth, **key))
    assert status == 409 and data["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize("body", [
    {"product_id": "nope"}, {"product_id": ["coffee"]}, {"product_id": "coffee", "quantity": 0},
    {"product_id": "coffee", "quantity": 100}, {"product_id": "coffee", "quantity": "2"},
    {"product_id": "coffee", "quantity": 1.5}, {"product_id": "coffee", "quantity": True}, {},
])
async def test_bad_order_input_is_400_and_nothing_stored(http_client, base_url, sim, app, body):
    auth = await login(http_client, base_url, sim)
    status, data = await call(http_client, "POST", base_url + "/api/orders", body, auth)
    assert status == 400 and set(data["error"]) >= {"code", "message"}
    assert sim.state.orders == {} or not sim.state.orders


async def test_unsigned_pay_answer_is_502_and_no_prepay_stored(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    status, _ = await call(http_client, "POST", sim.url + "/sim/faults",
                           {"path": "/pay/unifiedorder", "kind": "bad_sign", "count": 1})
    assert status == 201
    key = {"Idempotency-Key": "k-1"}
    status, data = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "tea"}, dict(auth, **key))
    assert status == 502 and data["error"]["code"] == "UPSTREAM_ERROR"
    retried = await create(http_client, base_url, auth, {"product_id": "tea"}, key)
    stored = await app.service.store.get_order(retried["out_trade_no"])
    assert stored.prepay_id and retried["payment"]["package"] == "prepay_id=" + stored.prepay_id


async def test_products_health_and_unknown_routes(http_client, base_url, app):
    status, data = await call(http_client, "GET", base_url + "/api/products")
    assert status == 200 and {p["id"] for p in data["products"]} == {"coffee", "tea", "cake"}
    assert all(isinstance(p["price"], int) for p in data["products"])
    assert await call(http_client, "GET", base_url + "/healthz") == (200, {"status": "ok"})
    status, data = await call(http_client, "GET", base_url + "/nope")
    assert status == 404 and data["error"]["code"] == "NOT_FOUND"
    status, data = await call(http_client, "DELETE", base_url + "/api/products")
    assert status == 405 and data["error"]["code"] == "METHOD_NOT_ALLOWED"
    status, data = await call(http_client, "POST", base_url + "/api/login", raw=b"\xff\xfe")
    assert status == 400 and data["error"]["code"] == "INVALID_JSON"


async def test_backend_reuses_upstream_connections(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    _, before = await call(http_client, "GET", sim.url + "/sim/stats")
    for _ in range(20):
        await create(http_client, base_url, auth)
    _, after = await call(http_client, "GET", sim.url + "/sim/stats")
    assert after["wechat_requests"] - before["wechat_requests"] == 20
    assert after["connections_accepted"] - before["connections_accepted"] <= 1


async def test_repay_when_wechat_says_paid_is_the_apis_order_paid(http_client, base_url, sim, app, clock):
    """unifiedorder's ORDERPAID is WeChat's code: the API answers its own, ORDER_PAID (as the
    README and the OpenAPI document list it), with WeChat's in wechat_code."""
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    app.service.handle_notify = lambda body: asyncio.sleep(0, b"<xml><return_code>FAIL</return_code></xml>")
    assert (await pay(http_client, sim, order["payment"]))[0] == 200
    clock.offset += 7200 - 599  # the prepay_id is to be renewed: unifiedorder is asked again
    status, data = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % no, headers=auth)
    assert status == 409 and data["error"]["code"] == "ORDER_PAID" and data["error"]["wechat_code"] == "ORDERPAID"
    assert (await app.service.store.get_order(no)).status == SUCCESS


async def test_renewal_inside_the_margin_keeps_wechats_expiry(http_client, base_url, sim, app, clock):
    """Inside the last 10 minutes WeChat answers the same prepay_id: its expiry must not be
    extended, or the order would be handed an expired prepay_id later."""
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    first = await app.service.store.get_order(no)
    clock.offset += 7200 - 550
    status, again = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % no, headers=auth)
    assert status == 200 and again["payment"]["package"] == order["payment"]["package"]
    assert (await app.service.store.get_order(no)).prepay_expires_at == first.prepay_expires_at
    clock.offset += 600
    await call(http_client, "POST", sim.url + "/sim/clock", {"advance": 7200})
    auth = await login(http_client, base_url, sim)  # the session token expired meanwhile
    status, renewed = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % no, headers=auth)
    assert status == 200 and renewed["payment"]["package"] != order["payment"]["package"]
    assert (await pay(http_client, sim, renewed["payment"]))[0] == 200
    await paid_in_store(app, no)


async def test_an_order_keeps_its_sign_type_when_the_configuration_changes(http_client, base_url, sim, app, clock):
    import dataclasses
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    no = order["out_trade_no"]
    hmac_config = dataclasses.replace(app.service.config, sign_type="HMAC-SHA256")
    app.service.config = app.service.wechat.config = hmac_config
    clock.offset += 7200
    await call(http_client, "POST", sim.url + "/sim/clock", {"advance": 7200})
    auth = await login(http_client, base_url, sim)  # the session token expired meanwhile
    status, renewed = await call(http_client, "POST", base_url + "/api/orders/%s/payment" % no, headers=auth)
    assert status == 200 and renewed["payment"]["signType"] == "MD5"
    assert (await pay(http_client, sim, renewed["payment"]))[0] == 200
    await paid_in_store(app, no)  # the notification is signed like the order: MD5
    fresh = await create(http_client, base_url, auth)
    assert fresh["payment"]["signType"] == "HMAC-SHA256"


async def test_background_sweep_finds_a_payment_whose_notifications_were_lost(http_client, base_url, sim, app, clock):
    auth = await login(http_client, base_url, sim)
    paid_order = await create(http_client, base_url, auth)
    await create(http_client, base_url, auth)  # one that is never paid
    app.service.handle_notify = lambda body: asyncio.sleep(0, b"<xml><return_code>FAIL</return_code></xml>")
    assert (await pay(http_client, sim, paid_order["payment"]))[0] == 200
    assert await app.service.sweep() == 0  # too young to ask about
    clock.offset += 61
    assert await app.service.sweep() == 2
    assert (await app.service.store.get_order(paid_order["out_trade_no"])).status == SUCCESS
    assert (await app.service.store.events(paid_order["out_trade_no"]))[-1] == (NOTPAY, SUCCESS, "orderquery")
    assert await app.service.sweep() == 0  # the unpaid one was just asked about
    clock.offset += 60
    assert await app.service.sweep() == 1  # ... and is asked again later, less and less often
    clock.offset += 7200 + 3600
    assert await app.service.sweep() == 0  # past any prepay_id's life: no more questions


async def test_order_history_is_the_callers_newest_first_in_pages(http_client, base_url, sim, app, clock):
    alice = await login(http_client, base_url, sim, "alice")
    bob = await login(http_client, base_url, sim, "bob")
    made = []
    for product in ("coffee", "tea", "cake"):
        made.append((await create(http_client, base_url, alice, {"product_id": product}))["out_trade_no"])
        clock.offset += 1
    bobs = (await create(http_client, base_url, bob))["out_trade_no"]
    await pay(http_client, sim, (await create(http_client, base_url, bob, {"product_id": "tea"}))["payment"])
    status, page = await call(http_client, "GET", base_url + "/api/orders?limit=2", headers=alice)
    assert status == 200 and [o["out_trade_no"] for o in page["orders"]] == made[::-1][:2]
    assert page["orders"][0]["product_id"] == "cake" and page["orders"][0]["status"] == "NOTPAY"
    assert page["orders"][0]["created_at"].endswith("+08:00") and page["orders"][0]["body"]
    status, rest = await call(http_client, "GET", base_url + "/api/orders?limit=2&before=" + page["next"],
                              headers=alice)
    assert [o["out_trade_no"] for o in rest["orders"]] == made[:1] and "next" not in rest
    status, theirs = await call(http_client, "GET", base_url + "/api/orders", headers=bob)
    assert bobs in [o["out_trade_no"] for o in theirs["orders"]] and not set(made) & {
        o["out_trade_no"] for o in theirs["orders"]}
    status, data = await call(http_client, "GET", base_url + "/api/orders")
    assert status == 401 and data["error"]["code"] == "UNAUTHORIZED"
    for query, code in (("?limit=0", "INVALID_LIMIT"), ("?limit=201", "INVALID_LIMIT"), ("?before=x", "INVALID_CURSOR")):
        status, data = await call(http_client, "GET", base_url + "/api/orders" + query, headers=alice)
        assert status == 400 and data["error"]["code"] == code
