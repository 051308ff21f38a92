"""WeChat's API v3 rules as the simulator plays them: the JSON errors (an HTTP status with
{"code", "message"}), the field formats of a JSAPI order and of a refund, the states a v3
answer names, the 5-minute signature window, and the checks against an order's state (repeats,
paid, closed, refund limits) with v3's codes and texts."""
import datetime
import re

from simulator import payurls, rules
from simulator.v3 import wire as v3wire

SIGNATURE_WINDOW = 300      # seconds a request's timestamp may be off (not scaled)
NONCE_MEMORY = 2 * SIGNATURE_WINDOW   # how long a nonce is remembered after its first use
MAX_NONCES = 200000         # remembered at most (oldest forgotten first)
MAX_TOTAL = 10 ** 10        # fen
# The HTTP status of each code, as WeChat's v3 docs list them (pay.weixin.qq.com/doc/v3/
# merchant/...: the JSAPI order, close and refund pages, and the common status-code table).
STATUS = {
    "PARAM_ERROR": 400, "INVALID_REQUEST": 400, "APPID_MCHID_NOT_MATCH": 400,
    "MCH_NOT_EXISTS": 400, "ORDER_CLOSED": 400, "ORDERPAID": 400,
    "SIGN_ERROR": 401,
    "NO_AUTH": 403, "NOAUTH": 403, "NOT_ENOUGH": 403, "OUT_TRADE_NO_USED": 403,
    "RULE_LIMIT": 403, "TRADE_ERROR": 403, "ACCOUNT_ERROR": 403, "USER_ACCOUNT_ABNORMAL": 403,
    "ORDER_NOT_EXIST": 404, "RESOURCE_NOT_EXISTS": 404, "NOT_FOUND": 404,
    "FREQUENCY_LIMITED": 429, "RATELIMIT_EXCEEDED": 429,
    "SYSTEM_ERROR": 500, "BANK_ERROR": 500, "OPENID_MISMATCH": 500,
    "USER_PAYING": 202,
}
MESSAGES = {
    "PARAM_ERROR": "参数错误",
    "INVALID_REQUEST": "无效请求",
    "SIGN_ERROR": "签名错误",
    "NO_AUTH": "商户无权限", "NOAUTH": "商户无权限",
    "NOT_ENOUGH": "余额不足",
    "ORDER_NOT_EXIST": "订单不存在",
    "RESOURCE_NOT_EXISTS": "订单不存在",
    "ORDER_CLOSED": "订单已关闭",
    "ORDERPAID": "订单已支付",
    "OUT_TRADE_NO_USED": "商户订单号重复",
    "APPID_MCHID_NOT_MATCH": "appid和mch_id不匹配",
    "MCH_NOT_EXISTS": "商户号不存在",
    "FREQUENCY_LIMITED": "频率超限",
    "SYSTEM_ERROR": "系统异常，请稍后重试",
    "USER_ACCOUNT_ABNORMAL": "退款请求失败",
}
# GET /v3/certificates of a merchant that has only the WeChat Pay public key: the real answer
# (seen in wechatpay-java#306/#354, WxJava#3412): 404 RESOURCE_NOT_EXISTS.
NO_CERTIFICATE = ("无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://"
                  "pay.weixin.qq.com/docs/merchant/products/platform-certificate/"
                  "wxp-pub-key-guide.html")
# trade_state_desc: the texts of real answers, as v2's (rules.TRADE_STATE_DESC).
TRADE_STATE_DESC = rules.TRADE_STATE_DESC
# The simulator's refund states (v2's) on the v3 wire, and their notification's event type.
REFUND_STATUS = {"PROCESSING": "PROCESSING", "SUCCESS": "SUCCESS", "REFUNDCLOSE": "CLOSED",
                 "CHANGE": "ABNORMAL"}
REFUND_EVENT = {"SUCCESS": ("REFUND.SUCCESS", "退款成功"),
                "REFUNDCLOSE": ("REFUND.CLOSED", "退款关闭"),
                "CHANGE": ("REFUND.ABNORMAL", "退款异常")}
# H5下单: "h5_url的有效期为5分钟" (payurls.H5_LINK_TTL); a later 下单 with the same
# out_trade_no and fields issues a new one. (code_url, Native's, lives 2 hours as a prepay_id
# does.)
H5_URL_TTL = payurls.H5_LINK_TTL
# H5下单's scene_info.h5_info.type: the scenes WeChat documents.
H5_TYPES = ("iOS", "Android", "Wap")
OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-|*]{6,32}$")
OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-|*@]{1,64}$")

_BEIJING = datetime.timezone(datetime.timedelta(hours=8))


class V3Error(Exception):
    """A v3 failure: the HTTP status and WeChat's {"code", "message"}; detail is for the
    request log (what exactly was wrong), message is what WeChat would say."""

    def __init__(self, code, message=None, status=None, detail=None):
        super().__init__(code)
        self.code = code
        self.message = message or MESSAGES.get(code, code)
        self.status = status or STATUS.get(code, 400)
        self.detail = detail or self.message


def param_error(message):
    return V3Error("PARAM_ERROR", message)


# --- field formats ----------------------------------------------------------------------
def string(body, name, required=True, max_bytes=None, where=""):
    value = body.get(name)
    if value is None:
        if required:
            raise param_error("输入源“/body/%s%s”映射到字段“%s”必填性规则校验失败，此字段为必填项"
                              % (where, name, name))
        return ""
    if not isinstance(value, str):
        raise param_error("%s%s must be a string" % (where, name))
    if required and value == "":
        raise param_error("%s%s must not be empty" % (where, name))
    if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
        raise param_error("%s%s is longer than %d bytes" % (where, name, max_bytes))
    return value


def obj(body, name, required=True, where=""):
    value = body.get(name)
    if value is None and not required:
        return {}
    if value is None:
        raise param_error("输入源“/body/%s%s”映射到字段“%s”必填性规则校验失败，此字段为必填项"
                          % (where, name, name))
    if not isinstance(value, dict):
        raise param_error("%s%s must be a JSON object" % (where, name))
    return value


def fen(body, name, where):
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOTAL:
        raise param_error("%s.%s must be a positive integer number of fen (a JSON number, not "
                          "a string)" % (where, name))
    return value


def currency(body, where):
    value = body.get("currency", "CNY")
    if value != "CNY":
        raise param_error("%s.currency must be CNY" % where)
    return value


def notify_url(url, name="notify_url"):
    """http(s) without query or fragment, at most 255 characters. WeChat wants https for a
    public host; the simulator also takes http (a local backend has no certificate)."""
    parts = payurls.split_url(url)
    ok = (parts is not None and len(url) <= 255 and parts.scheme in ("http", "https") and parts.netloc
          and not parts.query and "?" not in url and not parts.fragment)
    if not ok:
        raise param_error("%s must be an http(s) URL of at most 255 characters without a query "
                          "string: %r" % (name, url))
    return url


def check_order(body, trade_type="JSAPI"):
    """An order's fields (protocol.md 10), the normalised order or V3Error. trade_type: JSAPI
    (payer.openid required), NATIVE and APP (no payer: whoever scans or opens it pays), MWEB
    (the H5 order: scene_info required, check_scene)."""
    string(body, "appid")
    string(body, "mchid")
    description = string(body, "description", max_bytes=127)
    out_trade_no = string(body, "out_trade_no")
    if not OUT_TRADE_NO.match(out_trade_no):
        raise param_error("out_trade_no must be 6 to 32 characters of 0-9 A-Z a-z _ - | *")
    notify_url(string(body, "notify_url"))
    attach = string(body, "attach", required=False, max_bytes=128)
    amount = obj(body, "amount")
    total = fen(amount, "total", "amount")
    currency(amount, "amount")
    openid = ""
    if trade_type == "JSAPI":
        openid = string(obj(body, "payer"), "openid", where="payer/")
    elif trade_type == "MWEB":
        check_scene(body)
    time_expire = string(body, "time_expire", required=False)
    return {"description": description, "out_trade_no": out_trade_no, "attach": attach,
            "total": total, "openid": openid, "time_expire": time_expire,
            "expire_at": expire_time(time_expire), "trade_type": trade_type}


def expire_time(time_expire):
    """The POSIX time of time_expire ("" -> None), or V3Error."""
    if not time_expire:
        return None
    try:
        expire_at = v3wire.parse_rfc3339(time_expire)
        # shown in Beijing time later: a time that falls outside years 1..9999 there is no time
        datetime.datetime.fromtimestamp(expire_at, _BEIJING)
    except (ValueError, OverflowError, OSError):
        raise param_error("time_expire must be an RFC 3339 time such as "
                          "2026-12-02T10:34:56+08:00, not %r" % time_expire) from None
    return expire_at


def check_scene(body):
    """H5下单 (POST /v3/pay/transactions/h5): WeChat documents scene_info as required, with
    payer_client_ip (the payer's IPv4 or IPv6 address) and h5_info required, and h5_info.type
    required: the scene, one of iOS, Android, Wap."""
    scene = obj(body, "scene_info")
    string(scene, "payer_client_ip", max_bytes=45, where="scene_info/")
    h5_info = obj(scene, "h5_info", where="scene_info/")
    kind = string(h5_info, "type", max_bytes=32, where="scene_info/h5_info/")
    if kind not in H5_TYPES:
        raise param_error("scene_info.h5_info.type must be one of %s, not %r"
                          % (", ".join(H5_TYPES), kind))


def check_refund(body):
    """A refund request's fields: {out_trade_no|transaction_id, out_refund_no, reason,
    notify_url, refund, total}, or V3Error."""
    transaction_id = string(body, "transaction_id", required=False)
    out_trade_no = string(body, "out_trade_no", required=False)
    if not (transaction_id or out_trade_no):
        raise param_error("transaction_id or out_trade_no is required")
    out_refund_no = string(body, "out_refund_no")
    if not OUT_REFUND_NO.match(out_refund_no):
        raise param_error("out_refund_no must be 1 to 64 characters of 0-9 A-Z a-z _ - | * @")
    reason = string(body, "reason", required=False, max_bytes=80)
    url = string(body, "notify_url", required=False)
    if url:
        notify_url(url)
    amount = obj(body, "amount")
    refund, total = fen(amount, "refund", "amount"), fen(amount, "total", "amount")
    currency(amount, "amount")
    if refund > total:
        raise param_error("amount.refund is above amount.total")
    return {"transaction_id": transaction_id, "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no, "reason": reason, "notify_url": url,
            "refund": refund, "total": total}


# --- against an order's state ----------------------------------------------------------
def check_open(order):
    """An order that may still be repeated, paid or closed."""
    if order.paid:
        raise V3Error("ORDERPAID", detail="order %s is %s" % (order.out_trade_no,
                                                            order.trade_state))
    if order.trade_state == "CLOSED":
        raise V3Error("ORDER_CLOSED", detail="order %s is CLOSED" % order.out_trade_no)


def check_repeat(order, body, trade_type="JSAPI"):
    """The same out_trade_no again: only the same open v3 order of the same kind (trade_type)
    with the same fields."""
    check_open(order)
    ordered_as = order.fields.get("trade_type") or "JSAPI"
    if order.api == "v3" and ordered_as != trade_type:
        raise V3Error("OUT_TRADE_NO_USED", detail="out_trade_no %s was ordered before as %s, "
                      "not %s" % (order.out_trade_no, ordered_as, trade_type))
    if order.api != "v3" or order.request != body:
        changed = sorted(k for k in set(order.request) | set(body)
                         if order.request.get(k) != body.get(k))
        raise V3Error("OUT_TRADE_NO_USED", detail="out_trade_no %s was ordered before with other "
                      "fields (%s)" % (order.out_trade_no,
                                       ", ".join(changed) if order.api == "v3"
                                       else "through API v2"))


def check_refund_repeat(existing, order, fields):
    """The same out_refund_no again: the same order and the same amounts, or V3Error."""
    if existing.out_trade_no != order.out_trade_no:
        raise V3Error("INVALID_REQUEST", "商户退款单号已被其他订单使用",
                      detail="out_refund_no %s refunds order %s"
                      % (existing.out_refund_no, existing.out_trade_no))
    if (existing.total_fee, existing.refund_fee) != (fields["total"], fields["refund"]):
        raise V3Error("INVALID_REQUEST", "同一退款单号多次请求，退款金额不一致",
                      detail="out_refund_no %s was requested for %d of %d fen"
                      % (existing.out_refund_no, existing.refund_fee, existing.total_fee))


def check_new_refund(order, fields):
    """A new refund of a paid order: its total, at most MAX_REFUNDS, what is left."""
    if fields["total"] != order.total_fee:
        raise V3Error("INVALID_REQUEST", "订单金额与退款请求中的订单金额不一致",
                      detail="amount.total is %d, the order's total is %d"
                      % (fields["total"], order.total_fee))
    if len(order.refunds) >= rules.MAX_REFUNDS:
        raise V3Error("INVALID_REQUEST", "退款次数超过限制，一笔订单最多退款50次")
    left = order.total_fee - order.refunded_fee
    if left <= 0:
        raise V3Error("INVALID_REQUEST", "订单已全额退款")
    if fields["refund"] > left:
        raise V3Error("INVALID_REQUEST", "申请退款金额超过订单可退金额",
                      detail="amount.refund %d is above what is left to refund, %d"
                      % (fields["refund"], left))
