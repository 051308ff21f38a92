"""WeChat Pay v2's rules as the simulator plays them: field formats, the checks an order or a
refund must pass, and the error texts WeChat answers with (errors as exceptions that carry
WeChat's own codes, answered in one place by the endpoints)."""
import re

from simulator import payurls
from simulator.digits import parse_int
from simulator.rules import MAX_REFUNDS

REFUND_PAGE = 10        # refunds per refundquery answer (then offset)
MAX_NONCE = 32          # characters of nonce_str

# return_msg of return_code=FAIL answers, as WeChat words them.
SIGN_ERROR = "签名错误"
LACK_PARAMS = "缺少参数"
XML_FORMAT_ERROR = "XML格式错误"
NOT_UTF8 = "编码格式错误"
REQUIRE_POST = "请使用post方法"
POST_DATA_EMPTY = "post数据为空"
BODY_TOO_LARGE = "请求数据过大"
SIGN_TYPE_ERROR = "sign_type参数错误"
NONCE_TOO_LONG = "nonce_str参数长度有误"
SYSTEM_BUSY = "系统繁忙,请稍后再试"
INVALID_REFUND_FEE = "invalid refund_fee"
INVALID_TOTAL_FEE = "invalid total_fee"
INVALID_NOTIFY_URL = "invalid notify_url"

# WeChat's own texts (err_code_des as the real API words them).
DES = {
    "ORDERPAID": "该订单已支付",
    "ORDERCLOSED": "该订单已关闭",
    "ORDERNOTEXIST": "订单不存在",
    "APPID_NOT_EXIST": "appid不存在",
    "MCHID_NOT_EXIST": "mch_id不存在",
    "APPID_MCHID_NOT_MATCH": "appid和mch_id不匹配",
    "OUT_TRADE_NO_REPEAT": "201 商户订单号重复",
    "SYSTEMERROR": "系统超时",
    "NOTENOUGH": "余额不足",
    "NOAUTH": "商户无此接口权限",
    # Refunds: texts from real answers (SDK issues and captured traffic).
    "REFUND_FEE_MISMATCH": "订单金额或退款金额与之前请求不一致，请核实后再试",
    "FULLY_REFUNDED": "订单已全额退款",
    "REFUND_FEE_EXCEEDS": "refund_fee大于可退金额",
    "REFUND_COUNT": "退款次数超过限制，一笔订单最多退款50次",
    "OUT_REFUND_NO_USED": "out_refund_no已用于另一笔订单",
    "REFUNDNOTEXIST": "退款订单查询失败",
    "CERT_ERROR": "证书校验错误",
    "OFFSET": "offset超过total_refund_count",
}
FORMAT_DES = {
    "out_trade_no": "参数格式错误，最长32位，只能是数字、大小写字母_-|*",
    "total_fee": "参数格式错误，必须是正整数（单位：分）",
    "length": "参数长度有误，最长127字节",
    "format": "参数格式错误",
    "native": "为必填参数（trade_type=NATIVE）",
    "mweb": "为必填参数（trade_type=MWEB）",
    "time": "参数格式错误，格式为yyyyMMddHHmmss",
    "out_refund_no": "参数格式错误，最长64位，只能是数字、大小写字母_-|*@",
}
TRADE_TYPES = ("JSAPI", "NATIVE", "APP", "MWEB")
OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-|*]{1,32}$")
TOTAL_FEE = re.compile(r"^[1-9][0-9]{0,9}$")
TIME_14 = re.compile(r"^[0-9]{14}$")
OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-|*@]{1,64}$")
# The fields that make an order "the same order" when out_trade_no is repeated.
BUSINESS_FIELDS = ("appid", "body", "detail", "attach", "total_fee", "fee_type", "trade_type",
                   "openid", "product_id", "goods_tag", "limit_pay", "time_expire",
                   "notify_url", "sign_type")


class PayError(Exception):
    """A business failure: return_code SUCCESS, result_code FAIL, signed."""

    def __init__(self, err_code, err_code_des=None):
        super().__init__(err_code)
        self.err_code = err_code
        self.err_code_des = err_code_des or DES.get(err_code, err_code)


class ProtocolFail(Exception):
    """A communication-level failure: return_code FAIL, return_msg, no sign."""

    def __init__(self, return_msg, detail=None):
        super().__init__(return_msg)
        self.return_msg = return_msg
        self.detail = detail or return_msg


# --- unifiedorder, closeorder ------------------------------------------------------------
def check_unifiedorder(msg):
    """Field formats of protocol.md 4; raises PayError / ProtocolFail."""
    problem = next(_field_problems(msg), None)
    if problem:
        raise PayError("INVALID_REQUEST", "%s%s" % problem)
    check_notify_url(msg["notify_url"])


def _field_problems(msg):
    if not OUT_TRADE_NO.match(msg["out_trade_no"]):
        yield "out_trade_no", FORMAT_DES["out_trade_no"]
    if not TOTAL_FEE.match(msg["total_fee"]):
        yield "total_fee", FORMAT_DES["total_fee"]
    for name in ("body", "attach"):
        if len(msg.get(name, "").encode("utf-8")) > 127:
            yield name, FORMAT_DES["length"]
    if msg["trade_type"] not in TRADE_TYPES:
        yield "trade_type", FORMAT_DES["format"]
    # 统一下单: product_id "trade_type=NATIVE时，此参数必传"; H5's scene_info (h5_info: type,
    # wap_url, wap_name) is required for MWEB, and WeChat refuses an MWEB order without it
    # with INVALID_REQUEST (smartwalle/wxpay#14, befinal/node-tenpay#73).
    if msg["trade_type"] == "NATIVE" and not msg.get("product_id"):
        yield "product_id", FORMAT_DES["native"]
    if msg["trade_type"] == "MWEB" and not msg.get("scene_info"):
        yield "scene_info", FORMAT_DES["mweb"]
    if msg.get("fee_type", "CNY") not in ("CNY", ""):
        yield "fee_type", FORMAT_DES["format"]
    for name in ("time_start", "time_expire"):
        if msg.get(name) and not TIME_14.match(msg[name]):
            yield name, FORMAT_DES["time"]


def check_open(order):
    """An order neither paid nor closed: it may be repeated, paid or closed."""
    if order.paid:
        raise PayError("ORDERPAID")
    if order.trade_state == "CLOSED":
        raise PayError("ORDERCLOSED")


def check_repeat(order, fields):
    """unifiedorder again with the same out_trade_no: only for the same open order."""
    check_open(order)
    if fields != order.fields:
        raise PayError("INVALID_REQUEST", DES["OUT_TRADE_NO_REPEAT"])


# --- refunds -----------------------------------------------------------------------------
def check_refund(msg):
    """Formats of a refund request; returns (total_fee, refund_fee) or raises.

    Real WeChat answers an impossible amount (refund_fee above total_fee, not a positive
    integer) at the communication level: return_code FAIL, return_msg "invalid refund_fee".
    """
    if not TOTAL_FEE.match(msg["total_fee"]):
        raise ProtocolFail(INVALID_TOTAL_FEE, "total_fee must be a positive integer (fen)")
    if not TOTAL_FEE.match(msg["refund_fee"]):
        raise ProtocolFail(INVALID_REFUND_FEE, "refund_fee must be a positive integer (fen)")
    total_fee, refund_fee = int(msg["total_fee"]), int(msg["refund_fee"])
    if refund_fee > total_fee:
        raise ProtocolFail(INVALID_REFUND_FEE, "refund_fee is above total_fee")
    if not OUT_REFUND_NO.match(msg["out_refund_no"]):
        raise PayError("PARAM_ERROR", "out_refund_no" + FORMAT_DES["out_refund_no"])
    if msg.get("refund_fee_type", "CNY") not in ("CNY", ""):
        raise PayError("PARAM_ERROR", "refund_fee_type" + FORMAT_DES["format"])
    if msg.get("notify_url"):
        check_notify_url(msg["notify_url"])
    return total_fee, refund_fee


def check_refund_repeat(existing, order, total_fee, refund_fee):
    """The same out_refund_no again: the same order and the same amounts, or an error."""
    if existing.out_trade_no != order.out_trade_no:
        raise PayError("INVALID_REQUEST", DES["OUT_REFUND_NO_USED"])
    if (existing.total_fee, existing.refund_fee) != (total_fee, refund_fee):
        raise PayError("REFUND_FEE_MISMATCH")


def check_new_refund(order, total_fee, refund_fee):
    """A new refund of a paid order: its total_fee, at most MAX_REFUNDS, what is left."""
    if total_fee != order.total_fee:
        raise PayError("REFUND_FEE_MISMATCH")
    if len(order.refunds) >= MAX_REFUNDS:
        raise PayError("INVALID_REQUEST", DES["REFUND_COUNT"])
    left = order.total_fee - order.refunded_fee
    if left <= 0:
        raise PayError("ERROR", DES["FULLY_REFUNDED"])
    if refund_fee > left:
        raise PayError("INVALID_REQUEST", DES["REFUND_FEE_EXCEEDS"])


def refund_page(refunds, offset):
    """refundquery's page: REFUND_PAGE refunds from offset ("" = 0), which must exist."""
    start = parse_int(offset, MAX_REFUNDS) if offset else 0
    if start is None or (offset and start >= len(refunds)):
        raise PayError("PARAM_ERROR", DES["OFFSET"])
    return refunds[start:start + REFUND_PAGE]


def check_notify_url(url):
    parts = payurls.split_url(url)
    ok = (parts is not None and len(url) <= 256 and parts.scheme in ("http", "https") and parts.netloc
          and not parts.query and "?" not in url and not parts.fragment)
    if not ok:
        raise ProtocolFail(INVALID_NOTIFY_URL, "notify_url must be an http(s) URL of at most "
                           "256 characters without a query string: %r" % url)
