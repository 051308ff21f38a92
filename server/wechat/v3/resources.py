"""WeChat Pay v3's JSON resources (transactions, refunds) in the domain's names: amounts as
int fen, times as Beijing time; anything absent or malformed is None."""
import datetime

from server.domain import BEIJING, CHANGE, PROCESSING, REFUNDCLOSE, SUCCESS

REFUND_STATUS = {"SUCCESS": SUCCESS, "CLOSED": REFUNDCLOSE, "PROCESSING": PROCESSING, "ABNORMAL": CHANGE}


def text(data, key):
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def fen(amount, key):
    """amount[key] as int fen (a JSON integer, not negative); None otherwise."""
    value = amount.get(key) if isinstance(amount, dict) else None
    return value if type(value) is int and value >= 0 else None


def trade(resource):
    """A v3 transaction (query answer or notification resource) in the domain's names."""
    amount = resource.get("amount")
    currency = amount.get("currency") if isinstance(amount, dict) else None
    return {"appid": text(resource, "appid"), "mch_id": text(resource, "mchid"),
            "out_trade_no": text(resource, "out_trade_no"), "transaction_id": text(resource, "transaction_id"),
            "trade_state": text(resource, "trade_state"),
            "total_fee": fen(amount, "total") if currency in (None, "CNY") else None,
            "time_end": beijing(text(resource, "success_time"), "%Y%m%d%H%M%S") or ""}


def refund(resource, status_key):
    """A v3 refund (answer, query answer or notification resource) in the domain's names;
    status_key: "status" in answers, "refund_status" in notifications."""
    amount = resource.get("amount")
    status = text(resource, status_key)
    return {"mch_id": text(resource, "mchid"), "out_trade_no": text(resource, "out_trade_no"),
            "out_refund_no": text(resource, "out_refund_no"), "refund_id": text(resource, "refund_id"),
            "refund_status": REFUND_STATUS.get(status, status), "refund_fee": fen(amount, "refund"),
            "total_fee": fen(amount, "total"),
            "success_time": beijing(text(resource, "success_time"), "%Y-%m-%d %H:%M:%S")}


def beijing(text, layout):
    """An RFC 3339 time as Beijing time in `layout`; None if absent or malformed."""
    try:
        moment = datetime.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    if moment is None or moment.tzinfo is None:
        return None
    try:
        return moment.astimezone(BEIJING).strftime(layout)
    except (OverflowError, ValueError):   # 9999-12-31T23:59:59-23:59: past year 9999 in Beijing
        return None
