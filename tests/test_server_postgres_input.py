"""The backend on PostgreSQL, in process: input PostgreSQL cannot hold is the caller's
mistake (4xx, as on SQLite), not a database outage (503 STORE_UNAVAILABLE logged as an ERROR)."""
import pytest

from server.store.postgres.store import PostgresStore
from tests.support import ADMIN_TOKEN
from tests.support.api import call, create, login, paid_in_store, pay

pytestmark = pytest.mark.gen_test(timeout=30)
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


@pytest.fixture
def backend_store(postgres_url):
    return lambda path, clock: PostgresStore(postgres_url, clock=clock)


async def test_a_nul_character_is_a_bad_request_not_a_database_outage(http_client, base_url, sim, app):
    """PostgreSQL text cannot hold U+0000 ('invalid byte sequence for encoding "UTF8": 0x00'):
    a refund reason "a\\u0000b" (any JSON string up to 80 characters is accepted) or an order
    number %00 in the path reach the store and come back as 503 STORE_UNAVAILABLE, logged as
    'database error'. On SQLite the paths answer 404; the refund is stored PENDING and WeChat
    (the simulator) refuses its XML, 502: the reason should be refused before either, 400."""
    auth = await login(http_client, base_url, sim)
    order = await create(http_client, base_url, auth, {"product_id": "cake"})
    await pay(http_client, sim, order["payment"])
    await paid_in_store(app, order["out_trade_no"])
    status, data = await call(http_client, "POST", base_url + "/admin/orders/%s/refunds" % order["out_trade_no"],
                              {"refund_fee": 100, "reason": "a\u0000b"}, ADMIN)
    assert status == 400, data
    status, data = await call(http_client, "GET", base_url + "/api/orders/%00", headers=auth)
    assert status == 404, data
    status, data = await call(http_client, "GET", base_url + "/admin/orders/%00", headers=ADMIN)
    assert status == 404, data
