"""The stored tables as both engines see them: key, audit table, movable fields, record type."""
import dataclasses
import json

from server.domain import ORDER, REFUND_RECORD, LoggedNotification, Order, Refund

ORDER_COLUMNS = [f.name for f in dataclasses.fields(Order)]
REFUND_COLUMNS = [f.name for f in dataclasses.fields(Refund)]
NOTE_COLUMNS = [f.name for f in dataclasses.fields(LoggedNotification) if f.name != "id"]   # id: the database's


def order_of(row):
    """The Order of a database row (any mapping by column name)."""
    return Order(**{k: row[k] for k in ORDER_COLUMNS})


def refund_of(row):
    """The Refund of a database row (any mapping by column name)."""
    return Refund(**{k: row[k] for k in REFUND_COLUMNS})


def note_of(row):
    """The LoggedNotification of a database row (its body bytes whatever the driver hands back)."""
    values = {k: row[k] for k in NOTE_COLUMNS + ["id"]}
    headers = tuple(tuple(pair) for pair in json.loads(values["headers"]))
    return LoggedNotification(**dict(values, body=bytes(values["body"]), headers=headers))


def note_values(note):
    """The values of NOTE_COLUMNS for a LoggedNotification, in that order (its headers as JSON)."""
    return [json.dumps(note.headers) if k == "headers" else getattr(note, k) for k in NOTE_COLUMNS]


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    key: str
    events: str      # its audit table
    convert: object  # row -> record
    kind: str        # the domain's name for its state table (check_move)
    fields: frozenset   # what a move may set besides the status


ORDERS = Table("orders", "out_trade_no", "order_events", order_of, ORDER,
               frozenset({"transaction_id", "time_end", "checked_at"}))
REFUNDS = Table("refunds", "out_refund_no", "refund_events", refund_of, REFUND_RECORD,
                frozenset({"refund_id", "success_time", "error", "checked_at"}))
