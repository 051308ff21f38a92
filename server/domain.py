"""Orders, refunds and sessions: their states, their records, and THE table of allowed moves.

The store refuses any move this table does not allow (server/store/sqlite/store.py, `_move`); the
service asks it which states a move may start from (`sources`). Money is integer fen.
"""
import dataclasses
import datetime

BEIJING = datetime.timezone(datetime.timedelta(hours=8))   # WeChat's times are Beijing time
PAY_V2, PAY_V3 = "v2", "v3"   # the WeChat Pay API an order is made and paid through
PREPAY_TTL = 7200   # WeChat keeps a prepay_id for 2 hours; a v3 order is payable that long (time_expire)

# Order states: WeChat's trade_state names.
NOTPAY, SUCCESS, CLOSED, REFUND, PAYERROR = "NOTPAY", "SUCCESS", "CLOSED", "REFUND", "PAYERROR"
ORDER_STATES = (NOTPAY, SUCCESS, CLOSED, REFUND, PAYERROR)
PAYABLE = (NOTPAY, PAYERROR)      # may be given (new) payment parameters
PAID = (SUCCESS, REFUND)

# Refund states: PENDING is ours (stored, WeChat has not accepted it yet); the rest are WeChat's.
PENDING, PROCESSING, REFUNDCLOSE, CHANGE, FAILED = "PENDING", "PROCESSING", "REFUNDCLOSE", "CHANGE", "FAILED"
REFUND_OPEN = (PENDING, PROCESSING)
REFUND_FINAL = (SUCCESS, REFUNDCLOSE, CHANGE, FAILED)
REFUND_STATES = REFUND_OPEN + REFUND_FINAL
REFUND_RELEASED = (REFUNDCLOSE, FAILED)          # their amount may be refunded again
REFUND_OUTCOMES = (SUCCESS, REFUNDCLOSE, CHANGE)  # what WeChat reports for an accepted refund

ORDER, REFUND_RECORD = "order", "refund"   # the kinds of record MOVES governs (REFUND is an order state)

# from -> the states it may move to. Anything else is refused by the store.
MOVES = {
    ORDER: {
        None: {NOTPAY},                           # created
        NOTPAY: {SUCCESS, CLOSED, PAYERROR},
        PAYERROR: {SUCCESS, CLOSED},              # a failed attempt; the user may pay again
        CLOSED: {SUCCESS},                        # paid at WeChat before the close reached it
        SUCCESS: {REFUND},                        # a refund succeeded
        REFUND: set(),
    },
    REFUND_RECORD: {
        None: {PENDING},                          # stored before WeChat is called
        PENDING: {PROCESSING, FAILED} | set(REFUND_OUTCOMES),  # accepted, refused, or already settled
        PROCESSING: set(REFUND_OUTCOMES),
        SUCCESS: set(), REFUNDCLOSE: set(), CHANGE: set(), FAILED: set(),
    },
}


class MoveRefused(ValueError):
    """A move the table does not allow: a bug in the caller, never the user's doing."""


def sources(kind, to_status):
    """The states an order or refund may move to `to_status` from, in a stable order."""
    return tuple(state for state, targets in MOVES[kind].items() if state is not None and to_status in targets)


def check_move(kind, from_statuses, to_status):
    """Raise MoveRefused unless every from -> to_status is allowed."""
    wrong = [s for s in from_statuses if to_status not in MOVES[kind].get(s, ())]
    if wrong or not from_statuses:
        raise MoveRefused("%s: %s -> %s is not an allowed move" % (kind, "/".join(map(str, wrong or ["?"])), to_status))


@dataclasses.dataclass(frozen=True)
class Order:
    out_trade_no: str
    openid: str
    product_id: str
    quantity: int
    body: str
    total_fee: int
    sign_type: str
    status: str
    prepay_id: str = None
    prepay_expires_at: float = None
    transaction_id: str = None
    time_end: str = None
    idempotency_key: str = None
    created_at: float = 0.0
    updated_at: float = 0.0
    checked_at: float = None
    pay_version: str = PAY_V2   # PAY_V2 or PAY_V3: the API it was made under, so the one it is paid through


@dataclasses.dataclass(frozen=True)
class Refund:
    out_refund_no: str
    out_trade_no: str
    refund_fee: int
    reason: str
    status: str
    refund_id: str = None
    success_time: str = None
    error: str = None
    idempotency_key: str = None   # the admin's Idempotency-Key: one refund per key, whatever the order
    created_at: float = 0.0
    updated_at: float = 0.0
    checked_at: float = None


@dataclasses.dataclass(frozen=True)
class Session:
    openid: str
    session_key: str
    expires_at: float


def refundable_fee(order, refunds):
    """What is left to refund: total_fee less every refund not closed or failed."""
    return order.total_fee - sum(r.refund_fee for r in refunds if r.status not in REFUND_RELEASED)


def refunded_fee(refunds):
    return sum(r.refund_fee for r in refunds if r.status == SUCCESS)


ACCEPTED, DUPLICATE, REFUSED = "accepted", "duplicate", "refused"   # a notification's verdict
VERDICTS = (ACCEPTED, DUPLICATE, REFUSED)


@dataclasses.dataclass(frozen=True)
class LoggedNotification:
    """A notification as received, kept in the notification log: `body` the bytes WeChat sent
    (cut at the log's bound; `body_size` the length it had), `headers` the Wechatpay-* ones (v3),
    `kind` payment, refund or other, `replay_of` the entry an admin replayed."""
    received_at: float
    version: str
    kind: str
    verdict: str
    body: bytes
    body_size: int
    headers: tuple = ()           # ((name, value), ...) as received
    reason: str = None
    out_trade_no: str = None
    out_refund_no: str = None
    replay_of: int = None
    id: int = None
