"""The API's JSON for orders and refunds: the one place records become answers."""
import datetime

from server import domain


def products(catalog):
    return {"products": [{"id": p.id, "name": p.name, "price": p.price} for p in catalog]}


def order(record, refunds=None):
    """An order as GET /api/orders/<no> shows it; with `refunds`, what was refunded."""
    view = {"out_trade_no": record.out_trade_no, "status": record.status,
            "total_fee": record.total_fee, "product_id": record.product_id, "quantity": record.quantity,
            "body": record.body, "created_at": beijing_time(record.created_at)}
    if record.transaction_id:
        view["transaction_id"] = record.transaction_id
    if record.time_end:
        view["paid_at"] = beijing_iso(record.time_end)
    if refunds is not None:
        view["refunded_fee"] = domain.refunded_fee(refunds)
    return view


def order_with_payment(record, payment):
    """An order as created or paid again: with wx.requestPayment's five fields (or null)."""
    return dict(order(record), payment=payment)


def admin_order(record, refunds):
    """An order as the admin API shows it: its openid, refunds and what is left to refund."""
    return dict(order(record, refunds), openid=record.openid,
                refundable_fee=domain.refundable_fee(record, refunds), refunds=[refund(r) for r in refunds])


def refund(record, with_created_at=False):
    view = {"out_refund_no": record.out_refund_no, "out_trade_no": record.out_trade_no,
            "refund_fee": record.refund_fee, "status": record.status, "reason": record.reason}
    for key in ("refund_id", "success_time", "error"):
        if getattr(record, key):
            view[key] = getattr(record, key)
    if with_created_at:
        view["created_at"] = record.created_at
    return view


def page(items, cursor, name):
    """A list answer: {name: items, "next"?: cursor}."""
    answer = {name: items}
    if cursor:
        answer["next"] = cursor
    return answer


def notification(entry):
    """A notification log entry as GET /admin/notifications shows it (the body as text)."""
    view = {"id": entry.id, "received_at": beijing_time(entry.received_at), "version": entry.version,
            "kind": entry.kind, "verdict": entry.verdict, "reason": entry.reason,
            "out_trade_no": entry.out_trade_no, "body": entry.body.decode("utf-8", "replace")}
    if entry.out_refund_no:
        view["out_refund_no"] = entry.out_refund_no
    if entry.body_size > len(entry.body):
        view["body_size"] = entry.body_size   # the body shown was cut: this is how long it was
    if entry.replay_of is not None:
        view["replay_of"] = entry.replay_of
    return view


def replayed(entry, verdict, reason):
    """The answer to a replay: which entry, its new verdict and (refused) why."""
    return {"id": entry.id, "verdict": verdict, "reason": reason}


def beijing_time(timestamp):
    """A Unix time as ISO 8601 in Beijing time (+08:00), to the second."""
    return datetime.datetime.fromtimestamp(timestamp, domain.BEIJING).isoformat(timespec="seconds")


def beijing_iso(time_end):
    """WeChat's yyyyMMddHHmmss (Beijing time) as ISO 8601 with +08:00; raw if malformed."""
    try:
        parsed = datetime.datetime.strptime(time_end, "%Y%m%d%H%M%S")
    except ValueError:
        return time_end
    return parsed.replace(tzinfo=domain.BEIJING).isoformat()
