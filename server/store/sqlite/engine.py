"""The SQLite engine: one database thread per store, and group commit of what queues up.

SQLite work runs on one dedicated thread so the IOLoop never waits on the disk, and that
thread's single connection serialises this process's writes; other processes on the same
file queue on SQLite's write lock (BEGIN IMMEDIATE, busy timeout).

Group commit: operations that queue up while the thread is busy run as one batch inside
one transaction, each in its own SAVEPOINT (a failing operation rolls back alone), and
one COMMIT (one fsync) makes the whole batch durable before any caller hears back.
"""
import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time

from server.store import Outage, StoreError
from server.store.sqlite.schema import migrate

log = logging.getLogger("server.store")

BUSY_TIMEOUT = 10  # seconds a statement waits for another process's write lock


class SQLiteEngine:
    """One SQLite file on its database thread: open, close, ping, and _run(op) of an operation
    on that thread inside the batch's transaction (the store's methods are built on it)."""
    MAX_BATCH = 256

    def __init__(self, path, clock=time.time):
        self.path = path
        self.clock = clock
        self._conn = None
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._loop = None
        self._outage = Outage()

    async def open(self):
        """Open (creating and migrating as needed). Raises StoreError naming the file and why."""
        self._loop = asyncio.get_running_loop()
        opened = self._loop.create_future()
        self._thread = threading.Thread(target=self._work, args=(opened,), name="sqlite", daemon=True)
        self._thread.start()
        try:
            await opened
        except Exception as exc:
            self._thread = None
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError("cannot open the database %s: %s" % (self.path, reason)) from exc

    async def close(self):
        if self._thread is not None:
            self._queue.put(None)
            await self._loop.run_in_executor(None, self._thread.join)
            self._thread = None

    async def ping(self):
        return await self._run(lambda: self._conn.execute("SELECT 1").fetchone()[0] == 1)

    async def _run(self, fn, *args):
        future = self._loop.create_future()
        self._queue.put((fn, args, future))
        return await self._wait(future, time.monotonic())

    async def _wait(self, future, started):
        """The operation's result; a driver error (sqlite3.Error, the whole of the module's)
        becomes StoreError, an outage (not a refused statement) logged once (see Outage)."""
        try:
            result = await future
        except (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError) as exc:
            log.error("database error: %s", exc)   # the statement refused: not an outage
            raise StoreError("database error") from exc
        except sqlite3.Error as exc:
            self._outage.failed(exc, started)
            raise StoreError("database error") from exc
        self._outage.answered(started)
        return result

    def _work(self, opened):
        """The database thread: open, then take what is queued and run it as one batch,
        answering the callers only after its COMMIT."""
        result, error = _call(self._open, ())
        if error is not None and self._conn is not None:
            self._conn.close()
            self._conn = None
        self._loop.call_soon_threadsafe(_deliver, [(opened, result, error)])
        if error is not None:
            return
        while True:
            batch = [self._queue.get()]
            while batch[-1] is not None and len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for job in batch if job is not None]
            if jobs:
                self._loop.call_soon_threadsafe(_deliver, self._answers(jobs))
            if batch[-1] is None:
                self._conn.close()
                return

    def _answers(self, jobs):
        """The batch's answers; whatever goes wrong, every caller gets one (the thread lives on)."""
        try:
            return self._run_batch(jobs)
        except Exception as exc:
            self._rollback()
            return [(future, None, exc) for _, _, future in jobs]

    def _run_batch(self, jobs):
        """[(future, result, exception)]: every job in its savepoint, one COMMIT for all.

        A job whose error aborted the whole transaction (disk full, I/O error) gets that error;
        the abort undid the jobs before it too, so all the others run again in a new batch.
        """
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(future, None, exc) for _, _, future in jobs]
        results = []
        for i, (fn, args, future) in enumerate(jobs):
            result, error = _call(fn, args)
            if not self._conn.in_transaction:
                error = error or StoreError("the transaction was aborted")
                rest = jobs[:i] + jobs[i + 1:]
                return [(future, None, error)] + (self._run_batch(rest) if rest else [])
            results.append((future, result, error))
        try:
            self._commit()
        except sqlite3.Error as exc:
            self._rollback()
            return [(future, None, exc) for _, _, future in jobs]
        return results

    def _commit(self):
        """The batch's COMMIT (on the database thread); callers hear back only after it."""
        self._conn.execute("COMMIT")

    def _rollback(self):
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            # the connection's state is unknown now: start again from what is on disk
            log.error("rollback failed (%s): reopening the database", exc)
            self._conn.close()
            self._open()

    def _open(self):
        folder = os.path.dirname(self.path) if self.path != ":memory:" else ""
        if folder:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise StoreError("cannot create its folder %s: %s" % (folder, exc.strerror)) from None
        # another process on the same file may hold its write lock: wait for it (busy_timeout)
        conn = self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                            timeout=BUSY_TIMEOUT)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=%d" % (BUSY_TIMEOUT * 1000))
        _switch_to_wal(conn)
        # FULL: a transaction acknowledged to a caller survives a power cut, not just a kill.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn)

    def _tx(self):
        return _Transaction(self._conn)


def _switch_to_wal(conn):
    """PRAGMA journal_mode=WAL. On a new file that other processes are opening too, SQLite can
    answer "database is locked" here without waiting (the busy handler is not used for
    this lock): retry for up to BUSY_TIMEOUT."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    delay = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    if mode.lower() != "wal" and conn.execute("PRAGMA database_list").fetchone()[2]:
        raise StoreError("the database could not be switched to WAL mode (journal mode %s)" % mode)


class _Transaction:
    """One operation's unit of work inside its batch's transaction: a SAVEPOINT, released on
    success, rolled back alone on any exception (the batch's other operations stand)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("SAVEPOINT op")

    def __exit__(self, exc_type, *_):
        if exc_type:
            self.conn.execute("ROLLBACK TO op")
        self.conn.execute("RELEASE op")
        return False


def _call(fn, args):
    """(result, None) or (None, exception) of fn(*args)."""
    try:
        return fn(*args), None
    except Exception as exc:  # delivered to the caller's future, re-raised there
        return None, exc


def _deliver(results):
    for future, result, exc in results:
        if future.cancelled():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
