"""The PostgreSQL engine (asyncpg): a bounded pool, a timeout on every statement, retries of
deadlocks and serialization failures, and database errors turned into StoreError (an outage
logged once)."""
import asyncio
import logging
import time

from server.store import Outage, StoreError, StoreUnreachable, describe_url
from server.store.postgres.schema import SCHEMA_VERSION, migrate

log = logging.getLogger("server.store")

POOL_SIZE = 10            # connections per process (DATABASE_POOL_SIZE)
STATEMENT_TIMEOUT = 5.0   # seconds (DATABASE_TIMEOUT): a statement, a pool wait, a connect
RETRIES = 3               # deadlock / serialization failure: the whole operation again


class PostgresEngine:
    """One PostgreSQL database through a pool: open (and migrate), close, ping, and _run(op)
    of an operation on a pooled connection (the store's methods are built on it)."""

    def __init__(self, url, clock=time.time, pool_size=POOL_SIZE, timeout=STATEMENT_TIMEOUT):
        self.url = url
        self.clock = clock
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool = None
        self._outage = Outage()

    async def open(self, schema_version=SCHEMA_VERSION):
        """Connect and migrate. Raises StoreError naming the database (without its password)."""
        import asyncpg   # only a PostgreSQL deployment needs the driver loaded
        # whatever the driver or the network raises: asyncpg's three roots (InternalClientError,
        # e.g. "cannot switch to state 12" on a connection PostgreSQL dropped mid-operation, is
        # neither of the other two) and the socket's errors (OSError: ConnectionError, TimeoutError).
        # Not Exception: a TypeError or KeyError of our own code is a bug (500), not an outage.
        self._errors = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
                        asyncio.TimeoutError)
        self._retryable = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
        # the database answered and refused the statement (bad data, a constraint, the SQL or a
        # privilege): an error of its own, not an outage
        self._refused = (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError,
                         asyncpg.exceptions.SyntaxOrAccessError)
        # no answer from a database (yet): a network or connection failure, or a server starting
        # up, shutting down or full, as opposed to a refused login, a missing database, a newer schema
        self._unreachable = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InternalClientError,
                             asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
                             asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.TooManyConnectionsError)
        self._unique = asyncpg.exceptions.UniqueViolationError
        millis = str(int(self.timeout * 1000))
        try:
            # min_size=0: a pool keeping a floor of connections reconnects in the background
            # during an outage and logs a traceback each time (the store logs the outage once)
            self._pool = await asyncpg.create_pool(
                self.url, min_size=0, max_size=self.pool_size, timeout=self.timeout,
                command_timeout=self.timeout + 1,
                server_settings={"statement_timeout": millis, "lock_timeout": millis,
                                 "idle_in_transaction_session_timeout": str(int(self.timeout * 4000)),
                                 "application_name": "wxpay-tornado"},
                reset=_keep_session)
            await migrate(self._pool, schema_version)
        except (StoreError, *self._errors, ValueError) as exc:
            await self.close()
            reason = exc if isinstance(exc, StoreError) else (str(exc).strip() or type(exc).__name__)
            if isinstance(exc, self._unreachable):
                raise StoreUnreachable(describe_url(self.url), reason) from None
            raise StoreError("cannot open the database %s: %s" % (describe_url(self.url), reason)) from None

    async def close(self):
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout * 2)
            except (asyncio.TimeoutError, *self._errors):
                pool.terminate()

    async def ping(self):
        return await self._run(lambda conn: conn.fetchval("SELECT 1")) == 1

    async def schema_version(self):
        return await self._run(lambda conn: conn.fetchval("SELECT max(version) FROM schema_version"))

    async def _run(self, op):
        """op(connection) with a pooled connection; database errors become StoreError (an
        outage logged once, see Outage), and an operation that lost a deadlock or a
        serialization conflict runs again."""
        if self._pool is None:
            raise StoreError("the database is not open")
        started = time.monotonic()
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire(timeout=self.timeout) as conn:
                    result = await op(conn)
                self._outage.answered(started)
                return result
            except self._retryable as exc:
                if attempt == RETRIES - 1:   # the database answered each time: not an outage
                    log.error("database error after %d attempts: %s: %s", RETRIES, type(exc).__name__, exc)
                    raise StoreError("database error") from exc
                await asyncio.sleep(0.01 * (attempt + 1))
            except self._refused as exc:
                log.error("database error: %s: %s", type(exc).__name__, exc)
                raise StoreError("database error") from exc
            except self._errors as exc:
                self._outage.failed(exc, started)
                raise StoreError("database error") from exc


async def _keep_session(conn):
    """The pool's reset on release, instead of asyncpg's RESET ALL / UNLISTEN / advisory unlock
    (a round trip per operation): this store leaves no session state behind (SET LOCAL and
    transaction-level advisory locks only; asyncpg itself still rolls back an open transaction)."""

