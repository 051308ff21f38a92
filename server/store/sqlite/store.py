"""The Store on SQLite (WAL): every state change is one conditional transaction.

The guarantees are those of the Store contract (server/store/__init__.py); how this engine
runs them (the database thread, group commit) is server/store/sqlite/engine.py.
"""
import dataclasses
import json

from server.domain import (ORDER, PAID, PAYABLE, REFUND, REFUND_OPEN, REFUND_RECORD, REFUND_RELEASED, SUCCESS,
                           Session, check_move)
from server.store import RefundRefused
from server.store.sqlite.engine import SQLiteEngine
from server.store.tables import NOTE_COLUMNS, ORDER_COLUMNS, ORDERS, REFUND_COLUMNS, REFUNDS, note_of, note_values, refund_of


class SQLiteStore(SQLiteEngine):
    """The Store (server/store/__init__.py) on one SQLite file."""

    # -- sessions ----------------------------------------------------------------
    async def create_session(self, token_hash, openid, session_key, expires_at):
        def op():
            with self._tx():
                self._conn.execute(
                    "INSERT INTO sessions (token_hash, openid, session_key, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?)", (token_hash, openid, session_key, self.clock(), expires_at))
        await self._run(op)

    async def get_session(self, token_hash, now):
        """The live session for a token hash, or None when unknown or expired."""
        def op():
            return self._conn.execute(
                "SELECT openid, session_key, expires_at FROM sessions"
                " WHERE token_hash = ? AND expires_at > ?", (token_hash, now)).fetchone()
        row = await self._run(op)
        return Session(**dict(row)) if row else None

    # -- orders ------------------------------------------------------------------
    async def insert_order(self, order):
        """Store a new order. Returns (stored order, created). With an idempotency key
        already used by the same openid, returns that earlier order and created=False."""
        def op():
            with self._tx():
                if order.idempotency_key is not None:
                    existing = self._conn.execute(
                        "SELECT * FROM orders WHERE openid = ? AND idempotency_key = ?",
                        (order.openid, order.idempotency_key)).fetchone()
                    if existing:
                        return ORDERS.convert(existing), False
                check_move(ORDER, (None,), order.status)
                values = dataclasses.asdict(order)
                self._conn.execute(
                    "INSERT INTO orders (%s) VALUES (%s)" % (
                        ", ".join(ORDER_COLUMNS), ", ".join("?" * len(ORDER_COLUMNS))),
                    [values[c] for c in ORDER_COLUMNS])
                self._audit(ORDERS, order.out_trade_no, None, order.status, "create", order.created_at)
                return order, True
        return await self._run(op)

    async def list_orders(self, openid, limit, before=None):
        """The openid's orders, newest first, at most `limit`; `before` is the
        (created_at, out_trade_no) of the last one of the previous page."""
        return await self._page(ORDERS, "openid = ?", [openid], limit, before)

    async def get_order(self, out_trade_no):
        return await self._run(self._get, ORDERS, out_trade_no)

    def _get(self, table, key):
        row = self._conn.execute("SELECT * FROM %s WHERE %s = ?" % (table.name, table.key), (key,)).fetchone()
        return table.convert(row) if row else None

    async def set_prepay(self, out_trade_no, prepay_id, prepay_expires_at):
        """Record the prepay_id of an unpaid order (NOTPAY, or PAYERROR being paid again) and
        return the order; None when it is no longer unpaid."""
        def op():
            with self._tx():
                cur = self._conn.execute(
                    "UPDATE orders SET prepay_id = ?, prepay_expires_at = ?, updated_at = ?"
                    " WHERE out_trade_no = ? AND status IN (?, ?)",
                    (prepay_id, prepay_expires_at, self.clock(), out_trade_no, *PAYABLE))
            return self._get(ORDERS, out_trade_no) if cur.rowcount == 1 else None
        return await self._run(op)

    async def transition(self, out_trade_no, from_statuses, to_status, source, note=None, **fields):
        """Atomically move an order from one of from_statuses to to_status, setting fields
        (and logging `note` when it moved).

        Returns (changed, order after the attempt). changed is False when the order was not
        in any of from_statuses (someone else got there first); nothing is written then.
        """
        if not set(fields) <= ORDERS.fields:
            raise ValueError("unexpected fields %r" % sorted(fields))

        def op():
            with self._tx():
                changed = self._move(ORDERS, out_trade_no, from_statuses, to_status, source, fields)
                if changed and note is not None:
                    self._insert_note(note)
            return changed, self._get(ORDERS, out_trade_no)
        return await self._run(op)

    def _move(self, table, key, from_statuses, to_status, source, fields):
        """In the caller's transaction: the conditional UPDATE and its audit row. False when the
        row is missing or not in from_statuses (nothing written then)."""
        check_move(table.kind, from_statuses, to_status)  # the domain table decides what may move
        now = self.clock()
        row = self._conn.execute("SELECT status FROM %s WHERE %s = ?" % (table.name, table.key), (key,)).fetchone()
        if row is None:
            return False
        sets = ["status = ?", "updated_at = ?"] + ["%s = ?" % k for k in fields]
        cur = self._conn.execute("UPDATE %s SET %s WHERE %s = ? AND status IN (%s)" % (
            table.name, ", ".join(sets), table.key, ", ".join("?" * len(from_statuses))),
            [to_status, now, *fields.values(), key, *from_statuses])
        if cur.rowcount != 1:
            return False
        self._audit(table, key, row["status"], to_status, source, now)
        return True

    async def claim_due(self, now, min_age, max_age, limit):
        """Unpaid orders with a prepay_id and open refunds (PENDING, PROCESSING) created between
        max_age and min_age seconds ago, and not checked for a quarter of their age (so each
        is asked about a handful of times, not every sweep), marked checked at `now` in the
        same transaction. Returns (orders, refunds)."""
        due = ("created_at BETWEEN ? AND ? AND (checked_at IS NULL OR checked_at < ? - (? - created_at) / 4.0)"
               " ORDER BY created_at LIMIT ?")
        args = (now - max_age, now - min_age, now, now, limit)

        def claim(table, sql, states):
            with self._tx():
                rows = self._conn.execute(sql, (*states, *args)).fetchall()
                self._conn.executemany("UPDATE %s SET checked_at = ? WHERE %s = ?" % (table.name, table.key),
                                       [(now, row[table.key]) for row in rows])
            return [table.convert(dict(row, checked_at=now)) for row in rows]

        def op():
            orders = claim(ORDERS, "SELECT * FROM orders WHERE status IN (?, ?) AND prepay_id IS NOT NULL"
                                    " AND " + due, PAYABLE)
            refunds = claim(REFUNDS, "SELECT * FROM refunds WHERE status IN (?, ?) AND " + due, REFUND_OPEN)
            return orders, refunds
        return await self._run(op)

    async def mark_checked(self, out_trade_no, now):
        await self._mark_checked(ORDERS, out_trade_no, now)

    async def events(self, out_trade_no):
        """The audit trail of an order's transitions: [(from, to, source)] oldest first."""
        return await self._audit_trail(ORDERS, out_trade_no)

    async def _mark_checked(self, table, key, now):
        def op():
            with self._tx():
                self._conn.execute("UPDATE %s SET checked_at = ? WHERE %s = ?" % (table.name, table.key), (now, key))
        await self._run(op)

    async def _audit_trail(self, table, key):
        def op():
            return self._conn.execute("SELECT from_status, to_status, source FROM %s WHERE %s = ? ORDER BY id"
                                      % (table.events, table.key), (key,)).fetchall()
        return [tuple(r) for r in await self._run(op)]

    def _audit(self, table, key, from_status, to_status, source, at):
        self._conn.execute("INSERT INTO %s (%s, from_status, to_status, source, at) VALUES (?, ?, ?, ?, ?)"
                           % (table.events, table.key), (key, from_status, to_status, source, at))

    # -- refunds -----------------------------------------------------------------
    async def insert_refund(self, refund, max_refunds):
        """Record a new refund of a paid order, checking in the same transaction that the
        refunds not released (REFUNDCLOSE, FAILED) never add up to more than total_fee and
        number at most max_refunds. Returns (refund, created); a refund stored with the same
        idempotency_key, or the same out_refund_no with the same order and amount, returns the
        stored refund. Raises RefundRefused. This process's writes are serialised on the
        database thread and other processes' by BEGIN IMMEDIATE: the look-up and the insert
        are one step, so one key is one refund."""
        def op():
            with self._tx():
                existing = self._stored_refund(refund)
                if existing:
                    return existing, False
                order = self._conn.execute("SELECT status, total_fee FROM orders WHERE out_trade_no = ?",
                                           (refund.out_trade_no,)).fetchone()
                if order is None or order["status"] not in PAID:
                    raise RefundRefused("not_paid")
                marks = ", ".join("?" * len(REFUND_RELEASED))
                committed, count = self._conn.execute(
                    "SELECT coalesce(sum(refund_fee), 0), count(*) FROM refunds"
                    " WHERE out_trade_no = ? AND status NOT IN (%s)" % marks,
                    (refund.out_trade_no, *REFUND_RELEASED)).fetchone()
                if count >= max_refunds:
                    raise RefundRefused("count")
                if committed + refund.refund_fee > order["total_fee"]:
                    raise RefundRefused("amount")
                check_move(REFUND_RECORD, (None,), refund.status)
                values = dataclasses.asdict(refund)
                self._conn.execute("INSERT INTO refunds (%s) VALUES (%s)" % (
                    ", ".join(REFUND_COLUMNS), ", ".join("?" * len(REFUND_COLUMNS))),
                    [values[c] for c in REFUND_COLUMNS])
                self._audit(REFUNDS, refund.out_refund_no, None, refund.status, "create", refund.created_at)
                return refund, True
        return await self._run(op)

    def _stored_refund(self, refund):
        """In the caller's transaction: the refund stored with refund's idempotency_key, else
        with its out_refund_no (RefundRefused('conflict') if of another order or amount), else None."""
        if refund.idempotency_key is not None:
            row = self._conn.execute("SELECT * FROM refunds WHERE idempotency_key = ?",
                                     (refund.idempotency_key,)).fetchone()
            if row:
                return refund_of(row)
        row = self._conn.execute("SELECT * FROM refunds WHERE out_refund_no = ?", (refund.out_refund_no,)).fetchone()
        if row and (row["out_trade_no"], row["refund_fee"]) != (refund.out_trade_no, refund.refund_fee):
            raise RefundRefused("conflict")
        return refund_of(row) if row else None

    async def get_refund(self, out_refund_no):
        return await self._run(self._get, REFUNDS, out_refund_no)

    async def refunds_of(self, out_trade_no):
        """The order's refunds, oldest first."""
        def op():
            return self._conn.execute("SELECT * FROM refunds WHERE out_trade_no = ? ORDER BY created_at, rowid",
                                      (out_trade_no,)).fetchall()
        return [refund_of(r) for r in await self._run(op)]

    async def refund_transition(self, out_refund_no, from_statuses, to_status, source, note=None, **fields):
        """Atomically move a refund between states; a refund reaching SUCCESS moves its paid
        order to REFUND in the same transaction. Returns (changed, refund after the attempt)."""
        if not set(fields) <= REFUNDS.fields:
            raise ValueError("unexpected fields %r" % sorted(fields))

        def op():
            with self._tx():
                moved = self._move(REFUNDS, out_refund_no, from_statuses, to_status, source, fields)
                if moved and to_status == SUCCESS:
                    out_trade_no = self._conn.execute("SELECT out_trade_no FROM refunds WHERE out_refund_no = ?",
                                                      (out_refund_no,)).fetchone()[0]
                    self._move(ORDERS, out_trade_no, (SUCCESS,), REFUND, "refund " + out_refund_no, {})
                if moved and note is not None:
                    self._insert_note(note)
            return moved, self._get(REFUNDS, out_refund_no)
        return await self._run(op)

    async def list_refunds(self, statuses, limit, before=None):
        """Refunds in any of `statuses`, newest first, at most `limit`; `before` is the
        (created_at, out_refund_no) of the last one of the previous page."""
        where = "status IN (%s)" % ", ".join("?" * len(statuses))
        return await self._page(REFUNDS, where, list(statuses), limit, before)

    async def _page(self, table, where, args, limit, before):
        """Rows matching `where`, newest first (created_at, then key), after the cursor `before`."""
        sql = "SELECT * FROM %s WHERE %s" % (table.name, where)
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND %s < ?))" % table.key
            args = args + [before[0], before[0], before[1]]
        sql += " ORDER BY created_at DESC, %s DESC LIMIT ?" % table.key
        rows = await self._run(lambda: self._conn.execute(sql, args + [limit]).fetchall())
        return [table.convert(r) for r in rows]

    async def mark_refund_checked(self, out_refund_no, now):
        await self._mark_checked(REFUNDS, out_refund_no, now)

    async def refund_events(self, out_refund_no):
        """The audit trail of a refund: [(from, to, source)] oldest first."""
        return await self._audit_trail(REFUNDS, out_refund_no)

    # -- reconciliation ----------------------------------------------------------
    async def paid_orders_between(self, first, last):
        def op():
            return self._conn.execute(
                "SELECT * FROM orders WHERE time_end BETWEEN ? AND ? AND status IN (?, ?) ORDER BY time_end",
                (first, last, *PAID)).fetchall()
        return [ORDERS.convert(r) for r in await self._run(op)]

    async def save_reconciliation(self, bill_date, report, unresolved, created_at):
        def op():
            with self._tx():
                self._conn.execute(
                    "INSERT INTO reconciliations (bill_date, report, unresolved, created_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (bill_date) DO UPDATE SET report = excluded.report,"
                    " unresolved = excluded.unresolved, created_at = excluded.created_at",
                    (bill_date, json.dumps(report, ensure_ascii=False), unresolved, created_at))
        await self._run(op)

    async def get_reconciliation(self, bill_date):
        row = await self._run(lambda: self._conn.execute(
            "SELECT report FROM reconciliations WHERE bill_date = ?", (bill_date,)).fetchone())
        return json.loads(row[0]) if row else None

    async def claim_reconciliation(self, bill_date, owner, now, lease):
        """One conditional upsert: a new claim, or one taking over a day whose lease ran out."""
        def op():
            with self._tx():
                return self._conn.execute(
                    "INSERT INTO reconciliation_runs (bill_date, owner, lease_until) VALUES (?, ?, ?)"
                    " ON CONFLICT (bill_date) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until"
                    " WHERE reconciliation_runs.done_at IS NULL AND reconciliation_runs.lease_until <= ?"
                    " RETURNING bill_date", (bill_date, owner, now + lease, now)).fetchone()
        return await self._run(op) is not None

    async def finish_reconciliation(self, bill_date, owner, now, retry_at=None):
        def op():
            with self._tx():
                self._conn.execute(
                    "UPDATE reconciliation_runs SET done_at = ?, lease_until = ? WHERE bill_date = ? AND owner = ?",
                    (None if retry_at else now, retry_at or now, bill_date, owner))
        await self._run(op)

    # -- the notification log ----------------------------------------------------
    def _insert_note(self, note):
        return self._conn.execute("INSERT INTO notifications (%s) VALUES (%s)" % (
            ", ".join(NOTE_COLUMNS), ", ".join("?" * len(NOTE_COLUMNS))), note_values(note)).lastrowid

    async def log_notification(self, note):
        def op():
            with self._tx():
                return self._insert_note(note)
        return await self._run(op)

    async def get_notification(self, id):
        row = await self._run(lambda: self._conn.execute("SELECT * FROM notifications WHERE id = ?", (id,)).fetchone())
        return note_of(row) if row else None

    async def list_notifications(self, limit, before=None, out_trade_no=None, verdict=None):
        where, args = ["1 = 1"], []
        for column, value in (("out_trade_no", out_trade_no), ("verdict", verdict)):
            if value is not None:
                where.append("%s = ?" % column)
                args.append(value)
        if before is not None:
            where.append("(received_at < ? OR (received_at = ? AND id < ?))")
            args += [before[0], before[0], before[1]]
        sql = "SELECT * FROM notifications WHERE %s ORDER BY received_at DESC, id DESC LIMIT ?" % " AND ".join(where)
        return [note_of(r) for r in await self._run(lambda: self._conn.execute(sql, args + [limit]).fetchall())]

    async def prune_notifications(self, older_than):
        def op():
            with self._tx():
                return self._conn.execute("DELETE FROM notifications WHERE received_at < ?", (older_than,)).rowcount
        return await self._run(op)
