"""The Store on PostgreSQL: several processes and hosts on one database.

The guarantees are those of the Store contract (server/store/__init__.py), each one made
explicit in SQL rather than left to the isolation level (READ COMMITTED, the default):
- an idempotency key (an order's, a refund's): INSERT ... ON CONFLICT DO NOTHING, then the
  winner's row;
- a move: one conditional UPDATE whose FROM clause locks the row (FOR UPDATE) and hands
  the status it really had to RETURNING, the audit row written by the same statement;
- a refund: the order row locked (FOR UPDATE) while the refunds are summed and the new one
  inserted, so concurrent refunds of one order queue on that lock;
- the sweep: due rows claimed with FOR UPDATE SKIP LOCKED and marked checked in the same
  statement, so each is handed to one process per round.
Transactions are short (no WeChat call inside one); the pool, timeouts and retries are
server/store/postgres/engine.py.
"""
import dataclasses
import json

from server.domain import (ORDER, PAID, PAYABLE, REFUND, REFUND_OPEN, REFUND_RECORD, REFUND_RELEASED, SUCCESS,
                           Session, check_move)
from server.store import RefundRefused, StoreError
from server.store.postgres.engine import PostgresEngine
from server.store.tables import (NOTE_COLUMNS, ORDER_COLUMNS, ORDERS, REFUND_COLUMNS, REFUNDS, note_of, note_values,
                                 order_of, refund_of)


def _insert_sql(table, columns):
    return "INSERT INTO %s (%s) VALUES (%s)" % (
        table, ", ".join(columns), ", ".join("$%d" % (i + 1) for i in range(len(columns))))



class PostgresStore(PostgresEngine):
    """The Store (server/store/__init__.py) on one PostgreSQL database."""

    # -- sessions ----------------------------------------------------------------
    async def create_session(self, token_hash, openid, session_key, expires_at):
        await self._run(lambda conn: conn.execute(
            "INSERT INTO sessions (token_hash, openid, session_key, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)", token_hash, openid, session_key, self.clock(), expires_at))

    async def get_session(self, token_hash, now):
        row = await self._run(lambda conn: conn.fetchrow(
            "SELECT openid, session_key, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2",
            token_hash, now))
        return Session(**dict(row)) if row else None

    # -- orders ------------------------------------------------------------------
    async def insert_order(self, order):
        check_move(ORDER, (None,), order.status)
        values = dataclasses.asdict(order)
        n = len(ORDER_COLUMNS)
        # one statement (one round trip, atomic by itself): the insert, and its audit row if it inserted
        insert = ("WITH created AS (" + _insert_sql("orders", ORDER_COLUMNS)
                  + " ON CONFLICT (openid, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
                  " RETURNING out_trade_no, status, created_at),"
                  " audit AS (INSERT INTO order_events (out_trade_no, from_status, to_status, source, at)"
                  "  SELECT out_trade_no, NULL, status, $%d, created_at FROM created)"
                  " SELECT out_trade_no FROM created" % (n + 1))

        async def op(conn):
            if await conn.fetchval(insert, *[values[c] for c in ORDER_COLUMNS], "create") is not None:
                return order, True
            # the key was taken: by a committed order (ON CONFLICT waited for its transaction)
            row = await conn.fetchrow("SELECT * FROM orders WHERE openid = $1 AND idempotency_key = $2",
                                      order.openid, order.idempotency_key)
            if row is None:   # taken, then rolled back: let the caller try again
                raise StoreError("an order with this idempotency key is being written")
            return order_of(row), False
        return await self._run(op)

    async def get_order(self, out_trade_no):
        return await self._run(lambda conn: self._get(conn, ORDERS, out_trade_no))

    async def _get(self, conn, table, key):
        row = await conn.fetchrow("SELECT * FROM %s WHERE %s = $1" % (table.name, table.key), key)
        return table.convert(row) if row else None

    async def list_orders(self, openid, limit, before=None):
        return await self._page(ORDERS, "openid = $1", [openid], limit, before)

    async def set_prepay(self, out_trade_no, prepay_id, prepay_expires_at):
        row = await self._run(lambda conn: conn.fetchrow(
            "UPDATE orders SET prepay_id = $1, prepay_expires_at = $2, updated_at = $3"
            " WHERE out_trade_no = $4 AND status = ANY($5::text[]) RETURNING *",
            prepay_id, prepay_expires_at, self.clock(), out_trade_no, list(PAYABLE)))
        return order_of(row) if row else None

    async def transition(self, out_trade_no, from_statuses, to_status, source, note=None, **fields):
        return await self._transition(ORDERS, out_trade_no, from_statuses, to_status, source, fields, note)

    async def refund_transition(self, out_refund_no, from_statuses, to_status, source, note=None, **fields):
        return await self._transition(REFUNDS, out_refund_no, from_statuses, to_status, source, fields, note)

    async def _transition(self, table, key, from_statuses, to_status, source, fields, note=None):
        if not set(fields) <= table.fields:
            raise ValueError("unexpected fields %r" % sorted(fields))
        check_move(table.kind, from_statuses, to_status)   # the domain table decides what may move
        cascade = table is REFUNDS and to_status == SUCCESS

        async def op(conn):
            if not cascade and note is None:   # one statement: atomic by itself, one round trip
                row = await self._move(conn, table, key, from_statuses, to_status, source, fields)
            else:
                async with conn.transaction():
                    row = await self._move(conn, table, key, from_statuses, to_status, source, fields)
                    if row is not None and cascade:   # the refund's order: SUCCESS -> REFUND, same transaction
                        await self._move(conn, ORDERS, row["out_trade_no"], (SUCCESS,), REFUND,
                                         "refund " + key, {})
                    if row is not None and note is not None:   # the notification's log row, same transaction
                        await _insert_note(conn, note)
            if row is None:
                return False, await self._get(conn, table, key)
            return True, table.convert(row)
        return await self._run(op)

    async def _move(self, conn, table, key, from_statuses, to_status, source, fields):
        """One statement: the conditional UPDATE, its audit row naming the status the row really
        left (read under the row lock taken in FROM), the new row returned; None if not moved."""
        sets = ", ".join(["status = $2", "updated_at = $3"] + ["%s = $%d" % (k, i + 6) for i, k in enumerate(fields)])
        sql = ("WITH moved AS ("
               " UPDATE {t} AS cur SET {sets}"
               " FROM (SELECT {k}, status FROM {t} WHERE {k} = $1 FOR UPDATE) AS prev"
               " WHERE cur.{k} = prev.{k} AND prev.status = ANY($4::text[])"
               " RETURNING cur.*, prev.status AS from_status),"
               " audit AS (INSERT INTO {e} ({k}, from_status, to_status, source, at)"
               "  SELECT {k}, from_status, status, $5, $3 FROM moved)"
               " SELECT * FROM moved").format(t=table.name, k=table.key, e=table.events, sets=sets)
        return await conn.fetchrow(sql, key, to_status, self.clock(), list(from_statuses), source, *fields.values())

    async def mark_checked(self, out_trade_no, now):
        await self._mark_checked(ORDERS, out_trade_no, now)

    async def mark_refund_checked(self, out_refund_no, now):
        await self._mark_checked(REFUNDS, out_refund_no, now)

    async def _mark_checked(self, table, key, now):
        await self._run(lambda conn: conn.execute(
            "UPDATE %s SET checked_at = $1 WHERE %s = $2" % (table.name, table.key), now, key))

    async def claim_due(self, now, min_age, max_age, limit):
        """Claim the due orders and refunds: rows locked by another process's claim are skipped
        (SKIP LOCKED), the claimed ones marked checked at `now` in the same statement, so each
        is handed out once per round whatever the number of processes and hosts."""
        due = ("created_at BETWEEN $1 AND $2 AND (checked_at IS NULL OR checked_at < $3 - ($3 - created_at) / 4.0)")
        args = (now - max_age, now - min_age, now, limit)

        def claim(table, condition, states):
            return ("UPDATE {t} SET checked_at = $3 WHERE {k} IN ("
                    " SELECT {k} FROM {t} WHERE status = ANY($5::text[]) AND {cond} AND {due}"
                    " ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING *").format(
                        t=table.name, k=table.key, cond=condition, due=due), (*args, list(states))

        async def op(conn):
            async with conn.transaction():
                orders = await conn.fetch(*_flat(claim(ORDERS, "prepay_id IS NOT NULL", PAYABLE)))
                refunds = await conn.fetch(*_flat(claim(REFUNDS, "TRUE", REFUND_OPEN)))
            return (sorted((order_of(r) for r in orders), key=lambda o: o.created_at),
                    sorted((refund_of(r) for r in refunds), key=lambda r: r.created_at))
        return await self._run(op)

    async def events(self, out_trade_no):
        return await self._audit_trail(ORDERS, out_trade_no)

    async def refund_events(self, out_refund_no):
        return await self._audit_trail(REFUNDS, out_refund_no)

    async def _audit_trail(self, table, key):
        rows = await self._run(lambda conn: conn.fetch(
            "SELECT from_status, to_status, source FROM %s WHERE %s = $1 ORDER BY id" % (table.events, table.key), key))
        return [tuple(r) for r in rows]

    async def _audit(self, conn, table, key, from_status, to_status, source, at):
        await conn.execute("INSERT INTO %s (%s, from_status, to_status, source, at) VALUES ($1, $2, $3, $4, $5)"
                           % (table.events, table.key), key, from_status, to_status, source, at)

    # -- refunds -----------------------------------------------------------------
    async def insert_refund(self, refund, max_refunds):
        check_move(REFUND_RECORD, (None,), refund.status)
        values = dataclasses.asdict(refund)
        insert = (_insert_sql("refunds", REFUND_COLUMNS) + " ON CONFLICT (idempotency_key)"
                  " WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING out_refund_no")

        async def op(conn):
            async with conn.transaction():
                # the order row's lock serialises every refund of this order, across processes
                order = await conn.fetchrow("SELECT status, total_fee FROM orders WHERE out_trade_no = $1 FOR UPDATE",
                                            refund.out_trade_no)
                existing = await _stored_refund(conn, refund)
                if existing:
                    return existing, False
                if order is None or order["status"] not in PAID:
                    raise RefundRefused("not_paid")
                committed, count = await conn.fetchrow(
                    "SELECT coalesce(sum(refund_fee), 0), count(*) FROM refunds"
                    " WHERE out_trade_no = $1 AND NOT (status = ANY($2::text[]))",
                    refund.out_trade_no, list(REFUND_RELEASED))
                if count >= max_refunds:
                    raise RefundRefused("count")
                if committed + refund.refund_fee > order["total_fee"]:
                    raise RefundRefused("amount")
                if await conn.fetchval(insert, *[values[c] for c in REFUND_COLUMNS]) is None:
                    # the key was taken meanwhile by a refund of another order (whose lock we do not
                    # hold): ON CONFLICT waited for its transaction, so it is committed now
                    return await _refund_by_key(conn, refund.idempotency_key), False
                await self._audit(conn, REFUNDS, refund.out_refund_no, None, refund.status, "create",
                                  refund.created_at)
                return refund, True

        try:
            return await self._run(op)
        except StoreError as exc:
            if not isinstance(exc.__cause__, self._unique):
                raise
        # the same out_refund_no was inserted concurrently for another order: it is stored now
        existing = await self._run(lambda conn: conn.fetchrow(
            "SELECT * FROM refunds WHERE out_refund_no = $1", refund.out_refund_no))
        if existing is None:
            raise StoreError("database error")
        return _same_refund(existing, refund)

    async def get_refund(self, out_refund_no):
        return await self._run(lambda conn: self._get(conn, REFUNDS, out_refund_no))

    async def refunds_of(self, out_trade_no):
        rows = await self._run(lambda conn: conn.fetch(
            "SELECT * FROM refunds WHERE out_trade_no = $1 ORDER BY created_at, seq", out_trade_no))
        return [refund_of(r) for r in rows]

    async def list_refunds(self, statuses, limit, before=None):
        return await self._page(REFUNDS, "status = ANY($1::text[])", [list(statuses)], limit, before)

    async def _page(self, table, where, args, limit, before):
        """Rows matching `where`, newest first (created_at, then key), after the cursor `before`."""
        sql = "SELECT * FROM %s WHERE %s" % (table.name, where)
        args = list(args)
        if before is not None:
            n = len(args)
            sql += " AND (created_at, %s) < ($%d, $%d)" % (table.key, n + 1, n + 2)
            args += [float(before[0]), before[1]]
        sql += " ORDER BY created_at DESC, %s DESC LIMIT $%d" % (table.key, len(args) + 1)
        rows = await self._run(lambda conn: conn.fetch(sql, *args, limit))
        return [table.convert(r) for r in rows]

    # -- reconciliation ----------------------------------------------------------
    async def paid_orders_between(self, first, last):
        rows = await self._run(lambda conn: conn.fetch(
            'SELECT * FROM orders WHERE time_end COLLATE "C" BETWEEN $1 AND $2 AND status = ANY($3::text[])'
            ' ORDER BY time_end COLLATE "C"', first, last, list(PAID)))
        return [order_of(r) for r in rows]

    async def save_reconciliation(self, bill_date, report, unresolved, created_at):
        await self._run(lambda conn: conn.execute(
            "INSERT INTO reconciliations (bill_date, report, unresolved, created_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (bill_date) DO UPDATE SET report = excluded.report, unresolved = excluded.unresolved,"
            " created_at = excluded.created_at", bill_date, json.dumps(report, ensure_ascii=False), unresolved,
            created_at))

    async def get_reconciliation(self, bill_date):
        text = await self._run(lambda conn: conn.fetchval(
            "SELECT report FROM reconciliations WHERE bill_date = $1", bill_date))
        return None if text is None else json.loads(text)

    async def claim_reconciliation(self, bill_date, owner, now, lease):
        """One statement: ON CONFLICT takes the row lock, so of hosts claiming at once one
        inserts or takes over an expired lease and the others find it held."""
        claimed = await self._run(lambda conn: conn.fetchval(
            "INSERT INTO reconciliation_runs (bill_date, owner, lease_until) VALUES ($1, $2, $3)"
            " ON CONFLICT (bill_date) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until"
            " WHERE reconciliation_runs.done_at IS NULL AND reconciliation_runs.lease_until <= $4"
            " RETURNING bill_date", bill_date, owner, now + lease, now))
        return claimed is not None

    async def finish_reconciliation(self, bill_date, owner, now, retry_at=None):
        await self._run(lambda conn: conn.execute(
            "UPDATE reconciliation_runs SET done_at = $1, lease_until = $2 WHERE bill_date = $3 AND owner = $4",
            None if retry_at else now, retry_at or now, bill_date, owner))

    # -- the notification log ----------------------------------------------------
    async def log_notification(self, note):
        return await self._run(lambda conn: _insert_note(conn, note))

    async def get_notification(self, id):
        row = await self._run(lambda conn: conn.fetchrow("SELECT * FROM notifications WHERE id = $1", id))
        return note_of(row) if row else None

    async def list_notifications(self, limit, before=None, out_trade_no=None, verdict=None):
        where, args = ["TRUE"], []
        for column, value in (("out_trade_no", out_trade_no), ("verdict", verdict)):
            if value is not None:
                args.append(value)
                where.append("%s = $%d" % (column, len(args)))
        if before is not None:
            args += [float(before[0]), int(before[1])]
            where.append("(received_at, id) < ($%d, $%d)" % (len(args) - 1, len(args)))
        sql = "SELECT * FROM notifications WHERE %s ORDER BY received_at DESC, id DESC LIMIT $%d" % (
            " AND ".join(where), len(args) + 1)
        return [note_of(r) for r in await self._run(lambda conn: conn.fetch(sql, *args, limit))]

    async def prune_notifications(self, older_than):
        status = await self._run(lambda conn: conn.execute("DELETE FROM notifications WHERE received_at < $1",
                                                           older_than))
        return int(status.split()[-1])


async def _insert_note(conn, note):
    return await conn.fetchval(_insert_sql("notifications", NOTE_COLUMNS) + " RETURNING id", *note_values(note))


async def _stored_refund(conn, refund):
    """The refund stored with refund's idempotency_key, else with its out_refund_no
    (RefundRefused('conflict') if of another order or amount), else None."""
    if refund.idempotency_key is not None:
        row = await conn.fetchrow("SELECT * FROM refunds WHERE idempotency_key = $1", refund.idempotency_key)
        if row:
            return refund_of(row)
    row = await conn.fetchrow("SELECT * FROM refunds WHERE out_refund_no = $1", refund.out_refund_no)
    return _same_refund(row, refund)[0] if row else None


async def _refund_by_key(conn, key):
    row = await conn.fetchrow("SELECT * FROM refunds WHERE idempotency_key = $1", key)
    if row is None:   # taken, then rolled back: let the caller try again
        raise StoreError("a refund with this idempotency key is being written")
    return refund_of(row)


def _same_refund(existing, refund):
    if (existing["out_trade_no"], existing["refund_fee"]) != (refund.out_trade_no, refund.refund_fee):
        raise RefundRefused("conflict")
    return refund_of(existing), False


def _flat(statement):
    sql, args = statement
    return (sql, *args)
