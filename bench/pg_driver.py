#!/usr/bin/env python3
"""Which PostgreSQL driver for server/store/postgres/: asyncpg or psycopg 3 (async, with
psycopg_pool), measured on the store's own kind of work, side by side in one run.

    .venv/bin/pip install "psycopg[binary]==3.3.9" psycopg-pool==3.3.3   # the contender, bench only
    .venv/bin/python bench/pg_driver.py [--orders 3000] [--concurrency 20] [--rounds 3]

Starts a throwaway PostgreSQL (tests/support/postgres.py, fsync on), then for each driver
and round: a pool of 10 connections, `--orders` orders at `--concurrency`, each order the
store's three statements of a paid order's life (insert with ON CONFLICT + audit row in one
transaction; a conditional UPDATE ... RETURNING with its audit row in one statement; a read
by key). Prints this process's CPU (user+system) per order and orders/s for each round.
"""
import argparse
import asyncio
import os
import re
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.postgres import PostgresServer  # noqa: E402

SCHEMA = """
CREATE TABLE orders (out_trade_no text PRIMARY KEY, openid text NOT NULL, idempotency_key text,
    total_fee integer NOT NULL, status text NOT NULL, transaction_id text, created_at double precision NOT NULL,
    updated_at double precision NOT NULL);
CREATE UNIQUE INDEX orders_idem ON orders (openid, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE order_events (id bigserial PRIMARY KEY, out_trade_no text NOT NULL, from_status text,
    to_status text NOT NULL, source text NOT NULL, at double precision NOT NULL);
"""
INSERT = ("INSERT INTO orders (out_trade_no, openid, idempotency_key, total_fee, status, created_at, updated_at)"
          " VALUES ($1, $2, $3, $4, 'NOTPAY', $5, $5)"
          " ON CONFLICT (openid, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING *")
EVENT = "INSERT INTO order_events (out_trade_no, from_status, to_status, source, at) VALUES ($1, NULL, 'NOTPAY', 'create', $2)"
MOVE = ("WITH prev AS (SELECT status FROM orders WHERE out_trade_no = $1 FOR UPDATE),"
        " moved AS (UPDATE orders SET status = 'SUCCESS', transaction_id = $2, updated_at = $3"
        "  WHERE out_trade_no = $1 AND status = ANY($4) RETURNING *),"
        " audit AS (INSERT INTO order_events (out_trade_no, from_status, to_status, source, at)"
        "  SELECT $1, prev.status, 'SUCCESS', 'notify', $3 FROM prev, moved)"
        " SELECT moved.*, prev.status AS from_status FROM moved, prev")
READ = "SELECT * FROM orders WHERE out_trade_no = $1"


def psycopg_sql(sql):
    """$1.. placeholders as psycopg's %(p1)s (a parameter may appear twice)."""
    return re.sub(r"\$(\d)", r"%(p\1)s", sql)


def named(*values):
    return {"p%d" % (i + 1): v for i, v in enumerate(values)}


async def run_asyncpg(url, orders, concurrency, tag):
    import asyncpg
    pool = await asyncpg.create_pool(url, min_size=10, max_size=10)

    async def one(i):
        no = "%s%08d" % (tag, i)
        now = time.time()
        async with pool.acquire() as conn:
            async with conn.transaction():
                await conn.fetchrow(INSERT, no, "o" * 28, no, 1200, now)
                await conn.execute(EVENT, no, now)
        async with pool.acquire() as conn:
            await conn.fetchrow(MOVE, no, "4200" + no, now, ["NOTPAY", "PAYERROR"])
        async with pool.acquire() as conn:
            await conn.fetchrow(READ, no)
    await drive(one, orders, concurrency)
    await pool.close()


async def run_psycopg(url, orders, concurrency, tag):
    try:
        from psycopg.rows import dict_row
    except ImportError:
        sys.exit("bench/pg_driver.py: psycopg is not installed (see the command in this file's docstring)")
    from psycopg_pool import AsyncConnectionPool
    pool = AsyncConnectionPool(url, min_size=10, max_size=10, open=False, kwargs={"row_factory": dict_row})
    await pool.open(wait=True)
    insert, event, move, read = map(psycopg_sql, (INSERT, EVENT, MOVE, READ))

    async def one(i):
        no = "%s%08d" % (tag, i)
        now = time.time()
        async with pool.connection() as conn:
            async with conn.transaction():
                await (await conn.execute(insert, named(no, "o" * 28, no, 1200, now))).fetchone()
                await conn.execute(event, named(no, now))
        async with pool.connection() as conn:
            await (await conn.execute(move, named(no, "4200" + no, now, ["NOTPAY", "PAYERROR"]))).fetchone()
        async with pool.connection() as conn:
            await (await conn.execute(read, named(no))).fetchone()
    await drive(one, orders, concurrency)
    await pool.close()


async def drive(one, orders, concurrency):
    queue = iter(range(orders))

    async def worker():
        for i in queue:
            await one(i)
    await asyncio.gather(*[worker() for _ in range(concurrency)])


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    server = PostgresServer(durable=True).start()
    try:
        server.psql(SCHEMA)
        url = server.url()
        runners = {"asyncpg": run_asyncpg, "psycopg": run_psycopg}
        results = {name: [] for name in runners}
        for rnd in range(args.rounds):
            for name, runner in runners.items():   # interleaved: both see the same machine
                server.psql("TRUNCATE orders, order_events")
                c0, t0 = cpu(), time.monotonic()
                asyncio.run(runner(url, args.orders, args.concurrency, "%s%d" % (name[:2], rnd)))
                c1, t1 = cpu(), time.monotonic()
                results[name].append(((c1 - c0) / args.orders * 1e6, args.orders / (t1 - t0)))
                print("round %d %-8s CPU %6.0f us/order  %6.0f orders/s" % (
                    rnd + 1, name, *results[name][-1]), flush=True)
        for name, rows in results.items():
            us = sorted(r[0] for r in rows)
            ops = sorted(r[1] for r in rows)
            print("%-8s median CPU %.0f us/order (min %.0f, max %.0f); median %.0f orders/s" % (
                name, us[len(us) // 2], us[0], us[-1], ops[len(ops) // 2]))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
