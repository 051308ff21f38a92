"""The backend on PostgreSQL during a database failure, in process: whatever the driver raises,
a request answers 503 STORE_UNAVAILABLE (a 500 is a bug of ours, never an outage)."""
import asyncio

import asyncpg
import pytest

from server.store.postgres import PostgresStore
from tests.support.api import call, login
from tests.support.store import order

pytestmark = pytest.mark.gen_test(timeout=30)
UNAVAILABLE = {"error": {"code": "STORE_UNAVAILABLE", "message": "storage unavailable"}}


@pytest.fixture
def backend_store(postgres_url):
    return lambda path, clock: PostgresStore(postgres_url, clock=clock)


def failing(exc):
    async def method(self, *args, **kwargs):
        raise exc
    return method


@pytest.mark.parametrize("exc", [
    # asyncpg's own, outside PostgresError and InterfaceError: seen when PostgreSQL died under load
    asyncpg.InternalClientError("cannot switch to state 12; another operation is in progress"),
    asyncpg.exceptions.ProtocolError("unexpected message"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ConnectionResetError(104, "Connection reset by peer"),
], ids=lambda exc: type(exc).__name__)
async def test_any_driver_error_inside_an_operation_is_a_503(http_client, base_url, sim, app, monkeypatch, exc):
    auth = await login(http_client, base_url, sim)
    monkeypatch.setattr(asyncpg.connection.Connection, "fetchval", failing(exc))   # insert_order's statement
    assert await call(http_client, "POST", base_url + "/api/orders", {"product_id": "coffee"}, auth) == (
        503, UNAVAILABLE)
    monkeypatch.undo()
    status, _ = await call(http_client, "POST", base_url + "/api/orders", {"product_id": "coffee"}, auth)
    assert status == 201


async def test_a_bug_of_ours_inside_an_operation_stays_a_500(http_client, base_url, sim, app, monkeypatch):
    """The boundary: a TypeError is not an outage (it would hide the bug behind 503s)."""
    auth = await login(http_client, base_url, sim)
    monkeypatch.setattr(asyncpg.connection.Connection, "fetchval", failing(TypeError("a bug of ours")))
    assert await call(http_client, "POST", base_url + "/api/orders", {"product_id": "coffee"}, auth) == (
        500, {"error": {"code": "INTERNAL", "message": "internal error"}})


async def test_a_cancelled_operation_stays_cancelled(postgres_url, monkeypatch):
    """Cancellation (a client gone, a shutdown) is not a database failure: not turned into StoreError."""
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        monkeypatch.setattr(asyncpg.connection.Connection, "fetchval", failing(asyncio.CancelledError()))
        with pytest.raises(asyncio.CancelledError):
            await store.insert_order(order())
    finally:
        monkeypatch.undo()
        await store.close()
