"""Nothing is acknowledged before it is stored: with the database's COMMIT held, no 201 goes to
the Mini Program and no SUCCESS to WeChat; they go once the COMMIT is let through."""
import asyncio
import sqlite3
import threading

import pytest

from server.wechat.v2 import wire as wxpay
from server.store.sqlite.store import SQLiteStore
from tests.support.api import login
from tests.support.api import notification, unpaid_order

pytestmark = pytest.mark.gen_test(timeout=20)


class HeldStore(SQLiteStore):
    """A SQLiteStore that holds (on the database thread) the COMMIT of its n-th writing batch
    from now until released."""

    def __init__(self, path, clock):
        super().__init__(path, clock=clock)
        self.holding, self.release = threading.Event(), threading.Event()
        self.writes_to_pass = None
        self._changes = 0

    def hold_write(self, n):
        self.writes_to_pass = n - 1

    def _commit(self):
        wrote = self._conn.total_changes != self._changes
        if wrote and self.writes_to_pass is not None:
            if self.writes_to_pass == 0:
                self.writes_to_pass = None
                self.holding.set()
                self.release.wait(10)
            else:
                self.writes_to_pass -= 1
        super()._commit()
        self._changes = self._conn.total_changes


@pytest.fixture
def backend_store():
    return HeldStore


def committed_rows(app, sql):
    """What another connection sees: only what is committed."""
    conn = sqlite3.connect(app.service.store.path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def held_then_released(store, nth_write, request, check_held):
    """Start the request with its nth writing COMMIT held; check while held; release; the answer."""
    store.hold_write(nth_write)
    answer = asyncio.ensure_future(request)
    while not store.holding.is_set():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)          # time enough for an implementation that answers early
    assert not answer.done(), "answered while its COMMIT was held"
    check_held()
    store.release.set()
    return await answer


async def test_no_201_before_the_order_is_committed(http_client, base_url, sim, app):
    auth = await login(http_client, base_url, sim)
    request = http_client.fetch(base_url + "/api/orders", method="POST", body=b'{"product_id": "tea"}',
                                headers=auth, raise_error=False)

    def no_prepay_visible():
        assert committed_rows(app, "SELECT count(*) FROM orders WHERE prepay_id IS NOT NULL") == [(0,)]
    # an order is written twice (stored, then its prepay_id): the answer waits for the last
    response = await held_then_released(app.service.store, 2, request, no_prepay_visible)
    assert response.code == 201
    assert committed_rows(app, "SELECT count(*) FROM orders WHERE prepay_id IS NOT NULL") == [(1,)]


async def test_no_success_to_wechat_before_the_payment_is_committed(http_client, base_url, sim, app):
    order = await unpaid_order(http_client, base_url, sim)
    body = wxpay.signed_xml(notification(order), app.service.config.api_key)
    request = http_client.fetch(base_url + "/wechat/pay/notify", method="POST", body=body, raise_error=False)

    def still_unpaid():
        assert committed_rows(app, "SELECT status FROM orders") == [("NOTPAY",)]
    response = await held_then_released(app.service.store, 1, request, still_unpaid)
    assert wxpay.from_xml(response.body)["return_code"] == "SUCCESS"
    assert committed_rows(app, "SELECT status FROM orders") == [("SUCCESS",)]
