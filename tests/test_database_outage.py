"""The backend on PostgreSQL during a database failure, in process: whatever the driver raises,
a request answers 503 STORE_UNAVAILABLE (a 500 is a bug of ours, never an outage); start-up
waits for an unreachable database (DATABASE_WAIT), not for one that refuses it."""
import asyncio

import asyncpg
import pytest

from server.store import StoreError, StoreUnreachable, open_waiting
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


class FakeTime:
    """open_waiting's clock and sleep: sleeping moves the clock, and is recorded."""

    def __init__(self):
        self.now, self.pauses = 0.0, []

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.pauses.append(seconds)
        self.now += seconds


async def test_an_unreachable_database_is_tried_again_with_backoff_until_the_wait_ends(caplog):
    from tests.support.processes import free_port
    url = "postgresql://shop:pw-0123456789@127.0.0.1:%d/payments" % free_port()
    fake = FakeTime()
    with pytest.raises(StoreError) as info:
        await open_waiting(PostgresStore(url, timeout=1), 20, fake.sleep, fake.clock)
    assert fake.pauses == [0.5, 1, 2, 4, 5, 5, 2.5]
    assert str(info.value).endswith("(still not reachable after 20 s)")
    lines = [r.getMessage() for r in caplog.records if r.name == "server.store"]
    assert len(lines) == 7 and lines[0].startswith("database postgresql://shop@127.0.0.1:")
    assert lines[0].endswith("; retrying in 0.5s (attempt 1, up to 20 s)") and lines[-1].endswith(
        "; retrying in 2.5s (attempt 7, up to 20 s)")
    assert "pw-0123456789" not in caplog.text + str(info.value)


async def test_a_database_that_refuses_the_login_is_not_waited_for(postgres_server):
    """Reachable but refusing (no such role): waiting would not change it; one line at once."""
    fake = FakeTime()
    url = "postgresql://nobody@127.0.0.1:%d/postgres" % postgres_server.port
    with pytest.raises(StoreError) as info:
        await open_waiting(PostgresStore(url), 30, fake.sleep, fake.clock)
    assert not isinstance(info.value, StoreUnreachable) and fake.pauses == []
    assert 'role "nobody" does not exist' in str(info.value)


async def test_a_database_reached_within_the_wait_is_opened(postgres_url):
    store, fake = PostgresStore(postgres_url), FakeTime()
    real_open, attempts = store.open, []

    async def open_third_time():
        attempts.append(1)
        if len(attempts) < 3:
            raise StoreUnreachable("postgresql://postgres@127.0.0.1/postgres", "starting up")
        await real_open()
    store.open = open_third_time
    await open_waiting(store, 30, fake.sleep, fake.clock)
    try:
        assert fake.pauses == [0.5, 1] and await store.ping()
    finally:
        await store.close()
