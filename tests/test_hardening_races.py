"""Races: identical notifications at once; a notification against orderquery and close."""
import asyncio

import pytest

from server.domain import NOTPAY, SUCCESS
from tests.support.api import call, create, login, pay, wait_for

pytestmark = pytest.mark.gen_test(timeout=30)
FAIL_REPLY = b"<xml><return_code>FAIL</return_code></xml>"


async def paid_at_wechat_only(http_client, base_url, sim, app):
    """An order paid at the simulator whose first notification the backend lost."""
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth)
    real = app.service.handle_notify
    lost = asyncio.Event()

    async def lose(body):
        lost.set()
        return FAIL_REPLY
    app.service.handle_notify = lose
    # the simulator's retries must not win the race for us: freeze them by failing too
    status, paid = await pay(http_client, sim, order["payment"])
    assert status == 200
    await asyncio.wait_for(lost.wait(), 5)
    return auth, order, real


async def deliveries(http_client, sim, no):
    _, data = await call(http_client, "GET", sim.url + "/sim/notifications?out_trade_no=" + no)
    return data["notifications"]


async def test_fifty_identical_notifications_at_once(http_client, base_url, sim, app):
    auth, order, real = await paid_at_wechat_only(http_client, base_url, sim, app)
    no = order["out_trade_no"]
    app.service.handle_notify = real
    before = len(await deliveries(http_client, sim, no))
    status, data = await call(http_client, "POST", sim.url + "/sim/orders/%s/notify" % no,
                              {"mode": "duplicate", "count": 50})
    assert status == 200

    async def all_answered():
        copies = [d for d in (await deliveries(http_client, sim, no))[before:] if d["mode"] == "duplicate"]
        return len(copies) == 50 and all(d.get("outcome") for d in copies)
    await wait_for(all_answered, 15)
    copies = [d for d in (await deliveries(http_client, sim, no))[before:] if d["mode"] == "duplicate"]
    assert [d["outcome"] for d in copies] == ["success"] * 50
    events = await app.service.store.events(no)
    assert events == [(None, NOTPAY, "create"), (NOTPAY, SUCCESS, "notify")]


async def test_notification_races_orderquery_and_close(http_client, base_url, sim, app):
    auth, order, real = await paid_at_wechat_only(http_client, base_url, sim, app)
    no = order["out_trade_no"]
    app.service.handle_notify = real
    results = await asyncio.gather(
        call(http_client, "POST", sim.url + "/sim/orders/%s/notify" % no, {"mode": "duplicate", "count": 5}),
        call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % no, headers=auth),
        call(http_client, "POST", base_url + "/api/orders/%s/close" % no, headers=auth),
        call(http_client, "GET", base_url + "/api/orders/%s?refresh=1" % no, headers=auth),
    )
    close_status, close_body = results[2]
    assert close_status == 409 and close_body["error"]["code"] == "ORDER_PAID"
    stored = await app.service.store.get_order(no)
    assert stored.status == SUCCESS
    events = await app.service.store.events(no)
    assert [e for e in events if e[1] == SUCCESS] == [events[1]] and len(events) == 2
    assert all(e[1] != "CLOSED" for e in events)


async def test_close_racing_pay_ends_consistent(http_client, base_url, sim, app):
    """Close and wx.requestPayment at once: either closed and unpaid, or paid and not closed."""
    for _ in range(5):
        auth = await login(http_client, base_url, sim)
        order = await create(http_client, base_url, auth)
        no = order["out_trade_no"]
        (pay_status, _), (close_status, _) = await asyncio.gather(
            pay(http_client, sim, order["payment"]),
            call(http_client, "POST", base_url + "/api/orders/%s/close" % no, headers=auth))
        sim_state = sim.state.find_order(app.service.config.mch_id, no).trade_state
        if pay_status == 200:
            assert close_status == 409 and sim_state == SUCCESS

            async def recorded():
                return (await app.service.store.get_order(no)).status == SUCCESS
            await wait_for(recorded)
        else:
            assert close_status == 200 and sim_state == "CLOSED"
            assert (await app.service.store.get_order(no)).status == "CLOSED"
