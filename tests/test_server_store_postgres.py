"""The PostgreSQL engine's own guarantees (the shared contract suite is test_server_store.py):
versioned migrations applied once however many processes start together, upgrades from the
previous version, bounded waits (statement and lock timeouts), a bounded pool, and start-up
errors that name the database without its password."""
import asyncio

import asyncpg
import pytest

from server.domain import NOTPAY, SUCCESS
from server.store import StoreError
from server.store.postgres.schema import SCHEMA_VERSION
from server.store.postgres.store import PostgresStore
from tests.support.store import order, paid, refund

pytestmark = pytest.mark.gen_test


ALL_VERSIONS = list(range(1, SCHEMA_VERSION + 1))
OLD_ORDER = ("INSERT INTO orders (out_trade_no, openid, product_id, quantity, body, total_fee, sign_type, status,"
             " transaction_id, created_at, updated_at) VALUES ($1, $2, 'coffee', 1, 'Coffee', 1200, $3, 'SUCCESS', $4, 1, 1)")


async def versions(url):
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
    finally:
        await conn.close()


async def test_an_empty_database_is_migrated_to_the_current_schema(postgres_url):
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        assert await store.schema_version() == SCHEMA_VERSION == 7
        await paid(store)
        assert (await store.insert_refund(refund(), 50))[1]
    finally:
        await store.close()
    assert await versions(postgres_url) == ALL_VERSIONS


async def previous_release(url, version):
    """A database as the release at schema `version` left it (its rows written as that release wrote them)."""
    old = PostgresStore(url)
    await old.open(schema_version=version)
    await old.close()
    return await asyncpg.connect(url)


async def test_an_older_schema_is_upgraded_keeping_its_data(postgres_url):
    conn = await previous_release(postgres_url, 3)   # before refunds had idempotency keys (4) and orders a pay_version (5)
    await conn.execute(OLD_ORDER, "OLD", "o" * 28, "MD5", "4" * 28)
    await conn.execute("INSERT INTO refunds (out_refund_no, out_trade_no, refund_fee, reason, status, created_at,"
                       " updated_at) VALUES ('R1', 'OLD', 300, '', 'PENDING', 1, 1)")
    await conn.close()
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        assert (await store.get_order("OLD")).status == SUCCESS
        assert [(r.out_refund_no, r.idempotency_key) for r in await store.refunds_of("OLD")] == [("R1", None)]
        assert (await store.insert_refund(refund("R2", 300, "OLD", idempotency_key="k1"), 50))[1]
        conn = await asyncpg.connect(postgres_url)
        indexes = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
        await conn.close()
        assert {"refunds_status_created", "orders_openid_created", "refunds_idempotency"} <= indexes
    finally:
        await store.close()
    assert await versions(postgres_url) == ALL_VERSIONS


async def test_migration_5_gives_each_order_the_pay_version_its_sign_type_told(postgres_url):
    conn = await previous_release(postgres_url, 4)
    signed = {"MD5-ORDER": "MD5", "HMAC-ORDER": "HMAC-SHA256", "RSA-ORDER": "RSA"}
    for no, sign_type in signed.items():
        await conn.execute(OLD_ORDER, no, "o" * 28, sign_type, "4" * 28)
    await conn.close()
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        assert {no: (await store.get_order(no)).pay_version for no in signed} == {
            "MD5-ORDER": "v2", "HMAC-ORDER": "v2", "RSA-ORDER": "v3"}
        conn = await asyncpg.connect(postgres_url)
        try:
            with pytest.raises(asyncpg.NotNullViolationError):   # NOT NULL once every row has one
                await conn.execute(OLD_ORDER, "NEW", "o" * 28, "MD5", None)
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute("UPDATE orders SET pay_version = 'v4' WHERE out_trade_no = 'MD5-ORDER'")
        finally:
            await conn.close()
    finally:
        await store.close()
    assert await versions(postgres_url) == ALL_VERSIONS


async def test_processes_starting_together_migrate_once(postgres_url):
    """Eight stores (as eight processes) opening one empty database at once: one migrates under
    the advisory lock, the others wait and find it done; nobody fails on 'already exists'."""
    stores = [PostgresStore(postgres_url, pool_size=2) for _ in range(8)]
    results = await asyncio.gather(*[s.open() for s in stores], return_exceptions=True)
    try:
        assert [r for r in results if isinstance(r, Exception)] == []
        assert await versions(postgres_url) == ALL_VERSIONS
    finally:
        await asyncio.gather(*[s.close() for s in stores])


async def test_a_newer_schema_is_refused(postgres_url):
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(postgres_url)
    await conn.execute("INSERT INTO schema_version VALUES ($1)", SCHEMA_VERSION + 1)
    await conn.close()
    with pytest.raises(StoreError) as info:
        await PostgresStore(postgres_url).open()
    assert "schema %d is newer than this code (%d)" % (SCHEMA_VERSION + 1, SCHEMA_VERSION) in str(info.value)


async def test_open_failure_names_the_database_not_its_password(postgres_server):
    from tests.support.processes import free_port
    url = "postgresql://shop:s3cret-pw@127.0.0.1:%d/payments" % free_port()
    with pytest.raises(StoreError) as info:
        await PostgresStore(url, timeout=2).open()
    message = str(info.value)
    assert message.startswith("cannot open the database postgresql://shop@127.0.0.1:")
    assert "/payments: " in message and "s3cret" not in message


async def test_a_locked_row_costs_a_bounded_wait_then_a_clear_error(postgres_url):
    """A transaction elsewhere holding the order's row lock: the move waits at most the
    configured timeout, then fails as a StoreError (the request answers 503), and works
    once the lock is gone. Nothing hangs, nothing half-written."""
    store = PostgresStore(postgres_url, timeout=0.5)
    await store.open()
    try:
        await store.insert_order(order())
        holder = await asyncpg.connect(postgres_url)
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM orders WHERE out_trade_no = 'T1' FOR UPDATE")
        with pytest.raises(StoreError):
            await store.transition("T1", (NOTPAY,), SUCCESS, "notify", transaction_id="4" * 28)
        await tx.rollback()
        await holder.close()
        assert await store.events("T1") == [(None, NOTPAY, "create")]
        changed, _ = await store.transition("T1", (NOTPAY,), SUCCESS, "notify", transaction_id="4" * 28)
        assert changed
    finally:
        await store.close()


async def test_the_pool_is_bounded(postgres_url):
    store = PostgresStore(postgres_url, pool_size=3)
    await store.open()
    try:
        await asyncio.gather(*[store.insert_order(order("B%02d" % i)) for i in range(40)])
        conn = await asyncpg.connect(postgres_url)
        used = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wxpay-tornado'")
        await conn.close()
        assert 1 <= used <= 3
        assert len(await store.list_orders("o" * 28, 100)) == 40
    finally:
        await store.close()


async def test_a_migration_longer_than_the_statement_timeout_completes(postgres_url, monkeypatch):
    """DATABASE_TIMEOUT (statement_timeout, lock_timeout, command_timeout) bounds a request's
    statements, but the migration runs under it too: a step that builds an index on a large
    table (schema 2 -> 3 on 3 million orders took 2.5 s here; the default timeout is 5 s) is
    cancelled, and so is every process waiting for the advisory lock meanwhile, so no process
    of any host can start and `--migrate` fails too. Here a step that takes 2 s (pg_sleep, as a
    slow CREATE INDEX) under a 0.5 s timeout, opened by two processes at once."""
    from server.store.postgres import schema
    monkeypatch.setitem(schema.MIGRATIONS, 3, schema.MIGRATIONS[3] + "SELECT pg_sleep(2);")
    stores = [PostgresStore(postgres_url, timeout=0.5) for _ in range(2)]
    results = await asyncio.gather(*[s.open() for s in stores], return_exceptions=True)
    try:
        assert [str(r) for r in results if isinstance(r, Exception)] == []
        assert await versions(postgres_url) == ALL_VERSIONS
    finally:
        await asyncio.gather(*[s.close() for s in stores])


async def test_a_role_without_ddl_rights_opens_a_current_schema(postgres_server, postgres_url):
    """The usual PostgreSQL deployment: `run_server.py --migrate` as the schema's owner, the
    backends as a role that may read and write the tables but create nothing. With the
    schema already current, open() still runs CREATE TABLE IF NOT EXISTS schema_version,
    which PostgreSQL checks against CREATE on the schema before it looks for the table:
    'permission denied for schema'."""
    import secrets
    from urllib.parse import parse_qs, urlsplit
    schema = parse_qs(urlsplit(postgres_url).query)["search_path"][0]
    owner = PostgresStore(postgres_url)
    await owner.open()
    await owner.close()
    role = "app_%s" % secrets.token_hex(4)
    postgres_server.psql('CREATE ROLE %s LOGIN; GRANT USAGE ON SCHEMA "%s" TO %s;'
                         ' GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "%s" TO %s'
                         % (role, schema, role, schema, role))
    app = PostgresStore(postgres_url.replace("postgresql://postgres@", "postgresql://%s@" % role))
    try:
        await app.open()
        assert (await app.insert_order(order()))[1]
    finally:
        await app.close()
