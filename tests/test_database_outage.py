"""The backend on PostgreSQL during a database failure, in process: whatever the driver raises,
a request answers 503 STORE_UNAVAILABLE (a 500 is a bug of ours, never an outage); start-up
waits for an unreachable database (DATABASE_WAIT), not for one that refuses it; an outage is
logged in two lines, when it starts and when it ends, not once per request or sweep."""
import asyncio
import logging

import asyncpg
import pytest
import tornado.httpserver
import tornado.testing

from server.store import Outage, StoreError, StoreUnreachable, open_waiting
from server.store.postgres.store import PostgresStore
from tests.support import ADMIN_TOKEN, DEMO
from tests.support.api import call, login, wait_for
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


class Refused:
    """Pool.acquire() while PostgreSQL is down: every attempt refused."""

    def __init__(self, timeout=None):
        pass

    async def __aenter__(self):
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    async def __aexit__(self, *exc):
        return False


@pytest.fixture
def served(postgres_url, io_loop):
    """An App on PostgreSQL sweeping every 20 ms (WeChat never reached: nothing is due, and no
    daily reconciliation), served on a port of its own; its URL."""
    from server.app import App
    from server.config import Config
    nowhere = "http://127.0.0.1:9"
    config = Config(appid=DEMO["appid"], app_secret=DEMO["app_secret"], mch_id=DEMO["mch_id"],
                    api_key=DEMO["api_key"], notify_url="http://127.0.0.1:9/wechat/pay/notify",
                    login_base_url=nowhere, pay_base_url=nowhere, admin_token=ADMIN_TOKEN, database_url=postgres_url,
                    reconcile_daily=False)
    shop = App(config, sweep_interval=0.02)
    io_loop.run_sync(shop.start)
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(shop.web)
    server.add_sockets([sock])
    shop.url = "http://127.0.0.1:%d" % port
    yield shop
    server.stop()
    io_loop.run_sync(shop.stop)


async def test_an_outage_logs_one_line_when_it_starts_and_one_when_it_ends(served, http_client, monkeypatch, caplog):
    """PostgreSQL refusing every connection for several sweeps and requests, then back: one
    ERROR line naming the failure, one line when it works again, no traceback, nothing per
    request or per sweep (each failed request is still a 503 in the access log)."""
    caplog.set_level(logging.INFO)
    sweeps = []
    sweep = served.service.sweep

    async def counted():
        sweeps.append(1)
        return await sweep()
    monkeypatch.setattr(served.service, "sweep", counted)
    admin = {"Authorization": "Bearer " + ADMIN_TOKEN}

    async def swept(n):
        return len(sweeps) >= n
    with monkeypatch.context() as down:
        down.setattr(asyncpg.pool.Pool, "acquire", Refused)
        for _ in range(5):
            assert (await call(http_client, "GET", served.url + "/healthz"))[0] == 503
            assert await call(http_client, "GET", served.url + "/admin/refunds", headers=admin) == (503, UNAVAILABLE)
        failed = len(sweeps)
        await wait_for(lambda: swept(failed + 5))
    assert await call(http_client, "GET", served.url + "/healthz") == (200, {"status": "ok"})
    recovered = len(sweeps)
    await wait_for(lambda: swept(recovered + 3))
    logged = [(r.levelname, r.getMessage()) for r in caplog.records
              if r.name.startswith("server") and r.levelno >= logging.WARNING]
    assert logged[0] == (
        "ERROR", "database unavailable: ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)")
    assert logged[1][0] == "WARNING" and logged[1][1].startswith("database available again after ")
    assert len(logged) == 2, logged
    assert [r for r in caplog.records if r.exc_info] == []


async def test_an_outage_of_sqlite_logs_once_too(tmp_path, monkeypatch, caplog):
    """Every COMMIT failing (a full or failing disk) for five operations, then working."""
    import sqlite3
    from server.store.sqlite.store import SQLiteStore

    def disk_error(self):
        raise sqlite3.OperationalError("disk I/O error")
    store = SQLiteStore(str(tmp_path / "p.db"))
    await store.open()
    try:
        with monkeypatch.context() as broken:
            broken.setattr(SQLiteStore, "_commit", disk_error)
            for _ in range(5):
                with pytest.raises(StoreError):
                    await store.ping()
        assert await store.ping()
    finally:
        await store.close()
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("server")]
    assert logged[0] == ("ERROR", "database unavailable: OperationalError: disk I/O error")
    assert logged[1][0] == "WARNING" and logged[1][1].startswith("database available again after ")
    assert logged[1][1].endswith(" s (5 operations failed)") and len(logged) == 2


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_statement_the_database_refuses_is_not_an_outage(engine, tmp_path, request, caplog):
    """A unique key taken (a session token stored twice): a StoreError logged as it happens,
    not 'database unavailable' (the database answered)."""
    from tests.support.store import make_store
    where = str(tmp_path / "p.db") if engine == "sqlite" else request.getfixturevalue("postgres_url")
    store = make_store(engine, where)
    await store.open()
    try:
        await store.create_session("h" * 64, "o" * 28, "k", 2e9)
        with pytest.raises(StoreError):
            await store.create_session("h" * 64, "o" * 28, "k", 2e9)
        assert await store.get_session("h" * 64, 0) is not None
    finally:
        await store.close()
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("server") and r.levelno >= logging.WARNING]
    assert len(logged) == 1 and logged[0].startswith("database error: ") and "UNIQUE" in logged[0].upper(), logged


def test_operations_in_flight_across_a_change_do_not_flip_the_outage(caplog):
    """The moment PostgreSQL dies, operations begun before still succeed; the moment it is
    back, operations begun during the outage still fail: neither is a new line."""
    fake = FakeTime()
    outage = Outage(clock=fake.clock)
    fake.now = 10.0
    outage.failed(ConnectionResetError(104, "Connection reset by peer"), started=9.5)
    outage.answered(started=9.0)                   # in flight before the failure: still down
    fake.now = 12.0
    outage.failed(ConnectionRefusedError(111, "refused"), started=11.0)
    outage.answered(started=12.5)                  # begun after the last failure: back
    fake.now = 13.0
    outage.failed(TimeoutError(), started=11.5)    # begun during the outage: not a new one
    outage.answered(started=13.5)
    outage.failed(TimeoutError(), started=14.0)    # a new outage
    assert [r.getMessage() for r in caplog.records] == [
        "database unavailable: ConnectionResetError: [Errno 104] Connection reset by peer",
        "database available again after 2.0 s (2 operations failed)",
        "database unavailable: TimeoutError"]


async def test_a_deadlock_lost_every_time_is_not_an_outage(postgres_url, caplog):
    """A statement that loses a deadlock on each attempt: the database answered every time,
    so a StoreError logged as it happens, not 'database unavailable' (and no 'available
    again' later)."""
    store = PostgresStore(postgres_url)
    await store.open()

    async def deadlocked(conn):
        raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    try:
        with pytest.raises(StoreError):
            await store._run(deadlocked)
        assert await store.ping()
    finally:
        await store.close()
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("server") and r.levelno >= logging.WARNING]
    assert len(logged) == 1 and logged[0].startswith("database error") and "deadlock" in logged[0], logged
