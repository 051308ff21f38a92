"""The pay client interface the service talks to (PayClient), its errors and types, and make_client.

Exceptions (all subclasses of WeChatError; `status` and `code` say how the backend's API
reports them):

- UpstreamTimeout (504 UPSTREAM_TIMEOUT): no answer within the configured timeout.
- UpstreamError (502 UPSTREAM_ERROR): connection refused or reset, a non-200 status, a
  body that is not WeChat's XML/JSON, a return_code FAIL, a missing or wrong signature on
  an answer, an answer for another appid/mch_id, or SYSTEMERROR / errcode -1 after retries.
- WeChatRefused (502 by default, carries `wechat_code`): WeChat answered, correctly signed,
  and said no (err_code such as ORDERPAID, or a login errcode such as 40029). The service
  decides what a given refusal means for its caller.

- NotificationRefused (not a WeChatError: WeChat called us): a notification that is not
  to be believed or not for us; `status` is the HTTP status a v3 one is answered with (401
  when its signature, serial, timestamp or nonce fails, 400 when its content does; a v2 one
  is answered with FAIL XML).

Implementations: v2/client.py (XML, MD5/HMAC-SHA256) and v3/client.py (JSON, RSA); the
transport is upstream.py, a keep-alive connection pool on asyncio streams (see there why
not a library client).
"""
import dataclasses
import json
from typing import Protocol

from server.domain import PAY_V3


class WeChatError(Exception):
    status = 502
    code = "UPSTREAM_ERROR"
    wechat_code = None


class UpstreamTimeout(WeChatError):
    status = 504
    code = "UPSTREAM_TIMEOUT"


class UpstreamError(WeChatError):
    pass


class AnswerTooLarge(UpstreamError):
    """An answer over the bound its call set (a bill over BILL_MAX_BYTES): it came, and was not read."""


class WeChatRefused(WeChatError):
    def __init__(self, wechat_code, message):
        super().__init__(message)
        self.wechat_code = wechat_code


class NotificationRefused(Exception):
    """A notification not to be believed or not for us: answer `status`, store nothing.
    `about`: what the log line names it by (its order's number, v3's notification id), once known."""

    def __init__(self, status, message, about=None):
        super().__init__(message)
        self.status, self.about = status, about


PAYMENT, REFUND_RESULT = "payment", "refund result"   # what a notification is about
MAX_NOTIFY_BYTES = 64 * 1024   # a notification's body at most (v2 XML and v3 JSON alike)


@dataclasses.dataclass(frozen=True)
class Notification:
    """A notification a pay client has opened and believed (signature, envelope, for our
    appid/mch_id), in the domain's names whatever the wire. `kind`: PAYMENT, REFUND_RESULT,
    or None (a genuine event the backend has nothing to do with). Amounts are int fen, None
    when absent or not a whole number."""
    kind: str = None
    id: str = ""                # what logs name it by: v3's notification id, else the record's number
    event_type: str = ""
    order: object = None        # the Order it was verified against (v2 payments: the order's sign type)
    out_trade_no: str = None
    transaction_id: str = None
    trade_state: str = None     # SUCCESS when paid; otherwise what WeChat reports
    total_fee: int = None
    time_end: str = None        # yyyyMMddHHmmss, Beijing
    out_refund_no: str = None
    refund_id: str = None
    refund_status: str = None   # a domain refund state
    refund_fee: int = None
    success_time: str = None    # yyyy-MM-dd HH:mm:ss, Beijing


def claimed_kind(body):
    """What a v3 notification's (unencrypted) event_type says it is about, before it is believed:
    PAYMENT, REFUND_RESULT or None."""
    try:
        event_type = json.loads(body).get("event_type")
    except (ValueError, AttributeError, RecursionError):   # RecursionError: JSON nested too deep to read
        return None
    prefix = event_type.partition(".")[0] if isinstance(event_type, str) else ""
    return {"TRANSACTION": PAYMENT, "REFUND": REFUND_RESULT}.get(prefix)


def fen(text):
    """An amount written in WeChat's decimal digits (no sign, no leading zero) as int fen; None otherwise."""
    canonical = isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 18
    return int(text) if canonical and (text == "0" or text[0] != "0") else None


class PayClient(Protocol):
    """What the service may rely on, whatever the API version. Results use the domain's names
    (WeChat v2's), whatever the wire."""

    attempts: int
    """Calls made per request at most (a retry policy: SYSTEMERROR / errcode -1 are retried)."""

    async def start(self):
        """Background work the client needs (v3: fetching platform certificates)."""

    def close(self):
        """Release the connection pool and stop background work."""

    async def code2session(self, code):
        """{"openid", "session_key", "unionid"?} for a wx.login code."""

    async def prepay(self, order):
        """The prepay_id of a domain Order (JSAPI, its payer, its amount)."""

    def payment_params(self, prepay_id, order, timestamp):
        """wx.requestPayment's five fields for the Order's prepay_id, paySign computed here and nowhere else."""

    async def order_query(self, out_trade_no):
        """{"trade_state", "transaction_id", "total_fee" (int fen; None when not a whole number), "time_end"
        (yyyyMMddHHmmss, Beijing), ...}; WeChatRefused("ORDERNOTEXIST")."""

    async def close_order(self, out_trade_no):
        """closeorder; WeChatRefused ORDERPAID / ORDERCLOSED / ORDERNOTEXIST."""

    async def refund(self, out_refund_no, refund_fee, total_fee, out_trade_no=None, refund_desc=None,
                     notify_url=None):
        """{"refund_id", "refund_fee" (int fen), ...}: accepted, not done."""

    async def refund_query(self, out_refund_no):
        """[{"out_refund_no", "refund_id", "refund_fee" (int), "refund_status" (a domain refund
        state), "success_time"}], [] when WeChat has none."""

    async def download_bill(self, day):
        """The trade bill (ALL) of a Beijing day (a datetime.date) as [bill.BillRow], amounts in
        fen; bill.BillNotReady when WeChat has none (yet), bill.BillError for one not to be read."""

    async def open_notification(self, headers, body, replay=False):
        """A v3 notification (JSON, RSA-signed) opened and believed: a Notification;
        NotificationRefused (a v2 client: 404). replay: a stored copy run again by an admin
        (the signature verified, the timestamp window and the nonce cache not applied)."""

    async def open_v2_notification(self, kind, body, order_of):
        """A v2 notification (XML: a payment signed with the API key, or a refund result with
        AES req_info) opened and believed: a Notification; NotificationRefused. `order_of`:
        async out_trade_no -> Order or None (a payment is verified with its order's sign type)."""

    def v2_reply(self, problem):
        """The XML answer to a v2 notification: SUCCESS when problem is None, else FAIL."""


def make_client(config):
    """The PayClient for config.pay_version (WECHAT_PAY_VERSION)."""
    from server.wechat.v2.client import WeChatClient   # imported here: v2 and v3 import this package
    from server.wechat.v3.client import WeChatClientV3
    return WeChatClientV3(config) if config.pay_version == PAY_V3 else WeChatClient(config)
