"""WeChat's trade bill (交易账单, bill_type ALL), the CSV both APIs serve: read into rows in fen, gunzipped within a bound.

The format (docs/reconciliation.md cites the sources): a header row of Chinese column names,
one row per payment (交易状态 SUCCESS) and one per refund (交易状态 REFUND, with the refund's
numbers and 退款状态), every field of a detail row prefixed with a backquote, amounts in
yuan with two decimals (手续费 with five), then a summary header (总交易单数, ...) and its
row. Columns are found by name, so both the 24-column layout of older bills (总金额) and the
27-column one (订单金额, 申请退款金额) read.
"""
import dataclasses
import hashlib
import hmac
import re
import zlib

from tornado.ioloop import IOLoop

from server.wechat import AnswerTooLarge, UpstreamError, WeChatError

MAX_BILL_BYTES = 64 * 1024 * 1024   # the default bound of a bill, compressed or not (BILL_MAX_BYTES)
GZIP_MAGIC = b"\x1f\x8b"
_YUAN = re.compile(r"(-?)([0-9]{1,15})(?:\.([0-9]{1,2}))?")
_SUMMARY_FIRST = "总交易单数"
_PAYMENT, _REFUND = "SUCCESS", "REFUND"   # 交易状态 of a payment row and of a refund row
# column name -> our field; the first name found wins (newer bills first)
_COLUMNS = {
    "trade_time": ("交易时间",),
    "appid": ("公众账号ID",),
    "mch_id": ("商户号",),
    "transaction_id": ("微信订单号",),
    "out_trade_no": ("商户订单号",),
    "trade_state": ("交易状态",),
    "total_fee": ("订单金额", "总金额", "应结订单金额"),
    "refund_id": ("微信退款单号",),
    "out_refund_no": ("商户退款单号",),
    "refund_fee": ("申请退款金额", "退款金额"),
    "refund_status": ("退款状态",),
}


class BillNotReady(WeChatError):
    """WeChat has no bill of that day (yet): `empty_day` when its answer may also mean a day
    without trades (v2 No Bill Exist, v3 NO_STATEMENT_EXIST), not when it says it is being made."""
    status = 409
    code = "BILL_NOT_READY"

    def __init__(self, wechat_code, message, empty_day):
        super().__init__(message)
        self.wechat_code, self.empty_day = wechat_code, empty_day


class BillError(UpstreamError):
    """A bill that cannot be believed or read: too large, bad gzip, wrong hash, not the CSV."""


@dataclasses.dataclass(frozen=True)
class BillRow:
    kind: str                 # "payment" or "refund"
    trade_time: str           # yyyy-MM-dd HH:mm:ss, Beijing (a refund row: its payment's time)
    transaction_id: str
    out_trade_no: str
    total_fee: int            # fen
    out_refund_no: str = None
    refund_id: str = None
    refund_fee: int = None    # fen
    refund_status: str = None
    appid: str = None         # 公众账号ID and 商户号: whose payment the row is
    mch_id: str = None


def fen_of_yuan(text):
    """'12.34' -> 1234, exactly (never through a float); BillError for anything else."""
    match = _YUAN.fullmatch(text)
    if match is None:
        raise BillError("bill: %r is not an amount in yuan" % text[:24])
    sign, whole, cents = match.groups()
    value = int(whole) * 100 + int((cents or "0").ljust(2, "0"))
    return -value if sign else value


async def bounded(download, limit):
    """The bytes of `download` (a coroutine of a call bounded by `limit`); BillError naming the
    bound when the answer was larger."""
    try:
        return await download
    except AnswerTooLarge:
        raise BillError("bill: over %d bytes on the wire (BILL_MAX_BYTES)" % limit) from None


def gunzip(data, limit):
    """The gzip file `data` uncompressed, refusing more than `limit` bytes (a gzip bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BillError("bill: not a gzip file: %s" % exc) from None
    if len(plain) > limit:
        raise BillError("bill: more than %d bytes uncompressed (BILL_MAX_BYTES)" % limit)
    if not inflater.eof:
        raise BillError("bill: the gzip file is cut short")
    return plain


async def read(data, limit, gzipped, sha1=None):
    """load() in a thread: a bill of BILL_MAX_BYTES takes seconds to read, which the IOLoop
    serving requests must not wait for."""
    return await IOLoop.current().run_in_executor(None, load, data, limit, gzipped, sha1)


def load(data, limit, gzipped, sha1=None):
    """[BillRow] of a bill's bytes: gunzipped within `limit` when `gzipped`, its SHA1 (of the
    uncompressed file) compared in constant time with `sha1` when given, parsed."""
    plain = gunzip(data, limit) if gzipped else data
    if sha1 is not None and not hmac.compare_digest(hashlib.sha1(plain).hexdigest(), sha1):
        raise BillError("bill: the file's SHA1 is not the hash_value tradebill named")
    return parse(plain)


def parse(data):
    """[BillRow] of a bill (bytes or text, UTF-8, a BOM allowed, CRLF or LF); BillError when
    it is not WeChat's trade bill. The summary row must be there and count the detail rows: a
    file cut at a line's end reads as a shorter bill otherwise."""
    text = _text(data)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BillError("bill: empty")
    index = _header(lines[0])
    rows, details, summary = [], 0, None
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith(_SUMMARY_FIRST):
            summary = lines[number] if number < len(lines) else None
            break
        details += 1
        row = _row(index, line, number)
        if row is not None:
            rows.append(row)
    if summary is None:
        raise BillError("bill: no summary row (the file is cut short)")
    _check_count(summary, details)
    return rows


def _text(data):
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BillError("bill: not UTF-8") from None
    return data.lstrip("\ufeff")


def _header(line):
    """{field: column index} of the header row; BillError if a needed column is missing."""
    names = [name.strip().lstrip("`") for name in line.split(",")]
    index = {}
    for field, candidates in _COLUMNS.items():
        found = [names.index(name) for name in candidates if name in names]
        if not found:
            raise BillError("bill: the header lacks %s" % candidates[0])
        index[field] = found[0]
    return index


def _row(index, line, number):
    """A BillRow of a detail row; None for a trade state that moves no money."""
    fields = _fields(line)
    if len(fields) <= max(index.values()):
        raise BillError("bill: line %d has %d fields" % (number, len(fields)))
    value = {name: fields[i] for name, i in index.items()}
    common = dict(trade_time=value["trade_time"], transaction_id=value["transaction_id"],
                  out_trade_no=value["out_trade_no"], appid=value["appid"], mch_id=value["mch_id"])
    if value["trade_state"] == _PAYMENT:
        return BillRow("payment", total_fee=fen_of_yuan(value["total_fee"]), **common)
    if value["trade_state"] == _REFUND:
        return BillRow("refund", total_fee=fen_of_yuan(value["total_fee"] or "0"),
                       out_refund_no=value["out_refund_no"], refund_id=value["refund_id"],
                       refund_fee=fen_of_yuan(value["refund_fee"]), refund_status=value["refund_status"], **common)
    return None


def _fields(line):
    """A detail row's fields. Each starts with a backquote and 商品名称 or 商户数据包 may hold
    a comma (WeChat writes them unquoted), so a row splits at ",`"."""
    return line[1:].split(",`") if line.startswith("`") else line.split(",")


def _field(value):
    # every detail field is written `value: the backquote keeps spreadsheets from reading numbers
    return value[1:] if value.startswith("`") else value


def _check_count(line, rows):
    first = _field(line.split(",")[0])
    if not first.isdigit() or int(first) != rows:
        raise BillError("bill: the summary counts %s trades, the bill lists %d" % (first[:12], rows))
