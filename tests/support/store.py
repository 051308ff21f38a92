"""Records for the store tests, and stores of either engine on a fresh database."""
from server.domain import NOTPAY, SUCCESS, Order, Refund
from server.store.postgres.store import PostgresStore
from server.store.sqlite.store import SQLiteStore


def order(no="T1", **kw):
    values = dict(out_trade_no=no, openid="o" * 28, product_id="coffee", quantity=1, body="Coffee",
                  total_fee=1200, sign_type="MD5", status=NOTPAY, created_at=1.0, updated_at=1.0)
    values.update(kw)
    return Order(**values)


def refund(no="R1", fee=500, trade="T1", status="PENDING", **kw):
    values = dict(out_refund_no=no, out_trade_no=trade, refund_fee=fee, reason="", status=status,
                  created_at=1.0, updated_at=1.0)
    values.update(kw)
    return Refund(**values)


async def paid(store, no="T1"):
    await store.insert_order(order(no))
    await store.transition(no, (NOTPAY,), SUCCESS, "notify", transaction_id="4" * 28)


def make_store(engine, where, **kwargs):
    """A store (not opened) on `where`: a SQLite file path or a PostgreSQL URL."""
    return PostgresStore(where, **kwargs) if engine == "postgres" else SQLiteStore(where, **kwargs)
