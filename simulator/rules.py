"""WeChat's rules both API versions share as the simulator plays them: how long codes,
prepay_ids and tokens live, the notification retry schedule, the request and refund limits,
trade_state_desc, the login APIs' errors and the coupon of a payment played on the phone."""
from simulator.models import COUPON_TYPES

CODE_TTL = 300          # a wx.login code lives 5 minutes
PREPAY_TTL = 7200       # a prepay_id lives 2 hours
ACCESS_TOKEN_TTL = 7200  # /cgi-bin/token's expires_in
# WeChat's notify retry gaps after attempt 1, 2, ... (protocol.md 6): 16 attempts in 24h4m.
NOTIFY_SCHEDULE = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600,
                   10800, 10800, 10800, 21600, 21600)
MAX_REFUNDS = 50        # partial refunds per order
MAX_BODY = 1 << 20      # bytes of a request body; above, WeChat answers BODY_TOO_LARGE

# trade_state_desc of a query answer: the texts of real answers (v2 and v3 alike).
TRADE_STATE_DESC = {
    "SUCCESS": "支付成功",
    "REFUND": "订单发生过退款，退款详情请查询退款单",
    "NOTPAY": "订单未支付",
    "CLOSED": "订单已关闭",
    "REVOKED": "已撤销（刷卡支付）",
    "USERPAYING": "用户支付中（需要输入密码）",
    "PAYERROR": "支付失败，请重新下单支付",
}
# errmsg of the login APIs' errcodes.
LOGIN_ERRMSG = {-1: "system error", 40029: "invalid code", 40163: "code been used",
                40226: "high risk user", 45011: "api minute-quota reach limit mustslower "
                "retry next minute"}


class LoginError(Exception):
    """A code2Session/token failure: JSON {errcode, errmsg}."""

    def __init__(self, errcode, errmsg):
        super().__init__(errmsg)
        self.errcode, self.errmsg = errcode, errmsg


def check_coupon(order, data):
    """The optional coupon of a payment played on the phone (/sim/pay, the console):
    (coupon_fee, coupon_type), (0, "") without one; ValueError with the reason otherwise.

    coupon_fee: integer fen, 1 .. total_fee-1 (the payer pays the rest, cash_fee, in cash);
    coupon_type: CASH (default; settlement_total_fee = total_fee) or NO_CASH
    (settlement_total_fee = total_fee - coupon_fee).
    """
    fee, kind = data.get("coupon_fee"), data.get("coupon_type")
    if fee is None:
        if kind is not None:
            raise ValueError("coupon_type needs coupon_fee")
        return 0, ""
    if isinstance(fee, bool) or not isinstance(fee, int) or not 1 <= fee < order.total_fee:
        raise ValueError("coupon_fee must be an integer number of fen from 1 to total_fee - 1 "
                         "(%d)" % (order.total_fee - 1))
    kind = "CASH" if kind is None else kind
    if kind not in COUPON_TYPES:
        raise ValueError("coupon_type must be one of " + ", ".join(COUPON_TYPES))
    return fee, kind
