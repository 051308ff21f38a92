"""The simulator's records (login codes, orders, refunds, fault rules, the clock) and the
identifiers WeChat makes (openids, prepay, transaction and refund ids) in its Beijing time."""
import base64
import dataclasses
import datetime
import hashlib
import secrets
import time

BEIJING = datetime.timezone(datetime.timedelta(hours=8))
REFUND_STATUSES = ("PROCESSING", "SUCCESS", "REFUNDCLOSE", "CHANGE")
REFUND_OUTCOMES = ("SUCCESS", "REFUNDCLOSE", "CHANGE")
# coupon_type_$n: CASH (a prepaid coupon: the merchant is settled the whole total_fee) or
# NO_CASH (a merchant's own coupon: settlement_total_fee = total_fee - its amount).
COUPON_TYPES = ("CASH", "NO_CASH")
DEVELOPER_USER = "developer"   # whose openid unknown codes map to in developer mode
PAYER_USER = "default"         # who pays a Native, App or H5 order when no user is named


class Clock:
    """Real time plus an offset (POST /sim/clock); WeChat durations are scaled."""

    def __init__(self, time_scale=1.0):
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale
        self.offset = 0.0

    def now(self):
        return time.time() + self.offset

    def advance(self, seconds):
        self.offset += seconds

    def scaled(self, seconds):
        return seconds * self.time_scale


def beijing(ts, fmt="%Y%m%d%H%M%S"):
    """WeChat writes times in Beijing time, yyyyMMddHHmmss."""
    return datetime.datetime.fromtimestamp(ts, BEIJING).strftime(fmt)


def openid_for(appid, user):
    """28 characters, 'o' + a per-app prefix + a per-user part, stable across resets."""
    app_part = _b64(hashlib.sha256(("app:" + appid).encode("utf-8")).digest())[:5]
    user_part = _b64(hashlib.sha256(("%s\0%s" % (appid, user)).encode("utf-8")).digest())[:22]
    return "o" + app_part + user_part


def _b64(data):
    return base64.urlsafe_b64encode(data).decode("ascii")


def check_outcome(status):
    """How a refund may end: SUCCESS, REFUNDCLOSE or CHANGE (ValueError otherwise)."""
    if status not in REFUND_OUTCOMES:
        raise ValueError("a refund ends SUCCESS, REFUNDCLOSE or CHANGE, not %r" % (status,))
    return status


def random_digits(n):
    return "%0*d" % (n, secrets.randbelow(10 ** n))


def new_prepay_id(now):
    return "wx" + beijing(now) + secrets.token_hex(10)


def new_transaction_id(now):
    """28 digits: 4200 + 6 digits + yyyyMMdd + 10 digits."""
    return "4200" + random_digits(6) + beijing(now, "%Y%m%d") + random_digits(10)


def new_coupon_id():
    """10 digits, the shape of the coupon ids seen in real notifications."""
    return "2" + random_digits(9)


def new_notify_id(now):
    """A v3 notification id like WeChat's: EV- and 19 digits."""
    return "EV-" + beijing(now, "%Y%m%d%H%M") + random_digits(7)


def new_refund_id(now):
    """29 digits like WeChat's: 50300 + 5 digits + yyyyMMdd + 11 digits."""
    return "50300" + random_digits(5) + beijing(now, "%Y%m%d") + random_digits(11)


@dataclasses.dataclass
class LoginCode:
    code: str
    appid: str
    user: str
    openid: str
    expires_at: float
    used: bool = False


@dataclasses.dataclass
class Order:
    """One order of one merchant; its refunds are appended to `refunds`."""
    mch_id: str
    out_trade_no: str
    appid: str
    sandbox: bool
    sign_type: str
    fields: dict                # the business fields of the unifiedorder call
    created_at: float
    prepay_id: str = ""
    prepay_expires_at: float = 0.0
    h5_link: int = 0            # H5 (MWEB): which link of the prepay_id is current (payurls)
    h5_link_expires_at: float = 0.0
    trade_state: str = "NOTPAY"
    transaction_id: str = ""
    time_end: str = ""
    bank_type: str = ""
    refunds: list = dataclasses.field(default_factory=list)
    notify_delivered: bool = False
    refund_outcome: str = ""    # how the next refund ends (control plane); "" = SUCCESS
    device_info: str = ""       # as sent to unifiedorder; echoed in notify and orderquery
    coupon_fee: int = 0         # paid with a coupon (/sim/pay coupon_fee); 0 = none
    coupon_type: str = ""       # CASH or NO_CASH when coupon_fee
    coupon_id: str = ""
    api: str = "v2"             # "v3": created by POST /v3/pay/transactions/jsapi
    request: dict = dataclasses.field(default_factory=dict)   # v3: the create body, as sent
    paid_at: float = 0.0
    notify_id: str = ""         # v3: the notification's id (the same on every retry)
    payer_openid: str = ""      # who paid an order created without openid (NATIVE, APP, MWEB)
    notify_lost: bool = False   # fault: its payment notifications are never delivered

    @property
    def total_fee(self):
        return int(self.fields["total_fee"])

    @property
    def cash_fee(self):
        """What the payer paid in cash: total_fee less the coupon."""
        return self.total_fee - self.coupon_fee

    @property
    def settlement_total_fee(self):
        """total_fee less a NO_CASH coupon (a CASH coupon is settled in full)."""
        return self.total_fee - (self.coupon_fee if self.coupon_type == "NO_CASH" else 0)

    def coupon_fields(self):
        """WeChat's coupon fields of a notification or an orderquery answer ({} without one)."""
        if not self.coupon_fee:
            return {}
        return {"coupon_fee": str(self.coupon_fee), "coupon_count": "1",
                "coupon_type_0": self.coupon_type, "coupon_id_0": self.coupon_id,
                "coupon_fee_0": str(self.coupon_fee),
                "settlement_total_fee": str(self.settlement_total_fee)}

    @property
    def notify_url(self):
        return self.fields["notify_url"]

    @property
    def openid(self):
        """JSAPI's payer, named at unifiedorder; otherwise whoever paid (payer_openid)."""
        return self.fields.get("openid") or self.payer_openid

    @property
    def paid(self):
        return self.trade_state in ("SUCCESS", "REFUND")

    @property
    def refunded_fee(self):
        """What is refunded or being refunded: every refund that did not end REFUNDCLOSE."""
        return sum(r.refund_fee for r in self.refunds if r.refund_status != "REFUNDCLOSE")

    def to_json(self):
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("fields", "refunds", "request")}
        data.update({k: self.fields.get(k) for k in ("body", "attach", "trade_type",
                                                     "openid", "notify_url")})
        data["openid"] = self.openid
        data["total_fee"] = self.total_fee
        data["cash_fee"] = self.cash_fee
        data["settlement_total_fee"] = self.settlement_total_fee
        data["refunded_fee"] = self.refunded_fee
        data["refunds"] = [r.to_json() for r in self.refunds]
        return data


@dataclasses.dataclass
class Refund:
    """One refund of a paid order: PROCESSING until due_at, then `outcome`."""
    mch_id: str
    appid: str
    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    refund_id: str
    total_fee: int
    refund_fee: int
    sandbox: bool
    sign_type: str
    notify_url: str             # "" = no notification
    created_at: float
    due_at: float
    outcome: str = "SUCCESS"    # the status it settles to
    refund_status: str = "PROCESSING"
    success_time: str = ""      # yyyy-MM-dd HH:mm:ss Beijing, when SUCCESS
    settled_at: float = 0.0
    refund_desc: str = ""
    refund_account: str = "REFUND_SOURCE_UNSETTLED_FUNDS"
    refund_recv_accout: str = "支付用户的零钱"
    refund_channel: str = "ORIGINAL"
    fee_type: str = "CNY"
    notify_delivered: bool = False
    api: str = "v2"             # "v3": requested by POST /v3/refund/domestic/refunds
    notify_id: str = ""         # v3: the notification's id (the same on every retry)
    # API, or VENDOR_PLATFORM for a refund made by hand in the merchant platform (v2's
    # refund_request_source)
    request_source: str = "API"

    @property
    def key(self):
        return (self.mch_id, self.out_refund_no)

    def to_json(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Fault:
    id: str
    path: str
    kind: str
    value: object = None
    probability: float = 1.0
    count: object = None        # remaining firings; None = until deleted
    fired: int = 0
